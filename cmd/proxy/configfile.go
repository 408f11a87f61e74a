package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// fileConfig is the --config file: TOML, one table per section, each key a
// serve flag's setting (its flag tag names the flag, whose usage and
// default document it). The values are typed: a duration or a size is a
// string with its unit ("1m", "200GiB"), a list an array; a key the file
// leaves out keeps what the environment or the default gives.
//
// A setting added to serve gets a field here in the section it belongs
// to: TestEveryFlagHasAKey fails until it does. docs/configuration.md is
// generated from this type (go run ./cmd/proxy config-reference).
type fileConfig struct {
	HTTP struct {
		Listen            opt[string]        `toml:"listen" flag:"listen"`
		MetricsListen     opt[string]        `toml:"metrics-listen" flag:"metrics-listen"`
		PprofListen       opt[string]        `toml:"pprof-listen" flag:"pprof-listen"`
		MaxConnections    opt[int]           `toml:"max-connections" flag:"max-connections"`
		WriteStallTimeout opt[time.Duration] `toml:"write-stall-timeout" flag:"write-stall-timeout"`
		ShutdownTimeout   opt[time.Duration] `toml:"shutdown-timeout" flag:"shutdown-timeout"`
		Priority          opt[int]           `toml:"priority" flag:"priority"`
		AdvertiseMDNS     opt[bool]          `toml:"advertise-mdns" flag:"advertise-mdns"`
	} `toml:"http"`
	Log struct {
		Level  opt[string] `toml:"level" flag:"log-level"`
		Format opt[string] `toml:"format" flag:"log-format"`
	} `toml:"log"`
	Upstream struct {
		URLs              opt[[]string]      `toml:"urls" flag:"upstream"`
		TrustedPublicKeys opt[[]string]      `toml:"trusted-public-keys" flag:"trusted-public-key"`
		VerifySignatures  opt[bool]          `toml:"verify-signatures" flag:"verify-signatures"`
		NetrcFile         opt[string]        `toml:"netrc-file" flag:"netrc-file"`
		Timeout           opt[time.Duration] `toml:"timeout" flag:"upstream-timeout"`
		Straggle          opt[time.Duration] `toml:"straggle" flag:"upstream-straggle"`
		FailureThreshold  opt[int]           `toml:"failure-threshold" flag:"upstream-failure-threshold"`
		BackoffMax        opt[time.Duration] `toml:"backoff-max" flag:"upstream-backoff-max"`
		ErrorStatus       opt[int]           `toml:"error-status" flag:"upstream-error-status"`
		FetchConnections  opt[int]           `toml:"fetch-connections" flag:"fetch-connections"`
	} `toml:"upstream"`
	Disk struct {
		CacheDir   opt[string]        `toml:"cache-dir" flag:"cache-dir"`
		MaxSize    opt[byteSize]      `toml:"max-size" flag:"max-size"`
		MinFree    opt[byteSize]      `toml:"min-free" flag:"min-free"`
		PruneAfter opt[time.Duration] `toml:"prune-after" flag:"prune-after"`
		Recompress opt[string]        `toml:"recompress" flag:"recompress"`
		KeepLatest opt[[]string]      `toml:"keep-latest" flag:"keep-latest"`
		Pins       opt[[]string]      `toml:"pins" flag:"pin"`
	} `toml:"disk"`
	Misses struct {
		NegativeTTL         opt[time.Duration] `toml:"negative-ttl" flag:"negative-ttl"`
		Recheck             opt[time.Duration] `toml:"recheck" flag:"miss-recheck"`
		RecheckMax          opt[time.Duration] `toml:"recheck-max" flag:"miss-recheck-max"`
		LogMax              opt[int]           `toml:"log-max" flag:"miss-log-max"`
		PrefetchConcurrency opt[int]           `toml:"prefetch-concurrency" flag:"prefetch-concurrency"`
	} `toml:"misses"`
	Uploads struct {
		WriteTokenFile opt[string]   `toml:"write-token-file" flag:"write-token-file"`
		MaxSize        opt[byteSize] `toml:"max-size" flag:"upload-max-size"`
		Evict          opt[bool]     `toml:"evict" flag:"evict-uploads"`
	} `toml:"uploads"`
	Signing struct {
		SecretKeyFile opt[string] `toml:"secret-key-file" flag:"secret-key-file"`
	} `toml:"signing"`
	Admin struct {
		Token     opt[string] `toml:"token" flag:"admin-token"`
		TokenFile opt[string] `toml:"token-file" flag:"admin-token-file"`
	} `toml:"admin"`
	Fleet struct {
		Storage      opt[string]        `toml:"storage" flag:"storage"`
		AdvertiseURL opt[string]        `toml:"advertise-url" flag:"advertise-url"`
		Interval     opt[time.Duration] `toml:"interval" flag:"fleet-interval"`
		FillLeaseTTL opt[time.Duration] `toml:"fill-lease-ttl" flag:"fill-lease-ttl"`
		EvictGrace   opt[time.Duration] `toml:"evict-grace" flag:"evict-grace"`
	} `toml:"fleet"`
}

// sectionDocs says what each section of the config file holds, in the
// order of fileConfig.
var sectionDocs = map[string]string{
	"http":     "the listeners and the clients' connections",
	"log":      "the log on stderr",
	"upstream": "the caches a miss is fetched from, and what is trusted from them",
	"disk":     "the cache dir, its bound and what stays in it",
	"misses":   "paths no upstream had: how long they are remembered and re-asked",
	"uploads":  "`nix copy --to` into the proxy",
	"signing":  "the proxy's own signature on the narinfos it serves",
	"admin":    "the admin API under /_/ and the admin commands",
	"fleet":    "several proxies sharing one S3 bucket",
}

// fileKey is one key of the config file: where it lives, the flag it
// sets, and its value in a fileConfig.
type fileKey struct {
	section, key, flag string
	value              fileValue
}

// name is how messages and docs write the key: "[disk] max-size".
func (k fileKey) name() string { return "[" + k.section + "] " + k.key }

// fileKeys lists the keys of fc in fileConfig's order.
func fileKeys(fc *fileConfig) []fileKey {
	var keys []fileKey
	top := reflect.ValueOf(fc).Elem()
	for i := range top.NumField() {
		section := top.Type().Field(i).Tag.Get("toml")
		sv := top.Field(i)
		for j := range sv.NumField() {
			f := sv.Type().Field(j)
			keys = append(keys, fileKey{section: section, key: f.Tag.Get("toml"), flag: f.Tag.Get("flag"),
				value: sv.Field(j).Addr().Interface().(fileValue)})
		}
	}
	return keys
}

// keyOfFlag returns the config file's key for a serve flag.
func keyOfFlag(flag string) (fileKey, bool) {
	for _, k := range fileKeys(new(fileConfig)) {
		if k.flag == flag {
			return k, true
		}
	}
	return fileKey{}, false
}

// readConfigFile reads and decodes the config file at path. Every error
// names the file, and the line and key when TOML knows them. A key of the
// old flat format (the flag's name at the top level) is refused with its
// new place: read as a top-level key, it would be ignored.
func readConfigFile(path string) (*fileConfig, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: "+format, append([]any{path}, args...)...)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(text), &raw); err != nil {
		return nil, fail("%s", tomlError(err, false))
	}
	keys := fileKeys(new(fileConfig))
	sections := map[string]bool{}
	for _, k := range keys {
		sections[k.section] = true
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if _, table := raw[name].(map[string]any); table && sections[name] || name == warmKey {
			continue // warmKey: readWarms reads the [[warm]] tables
		}
		for _, k := range keys {
			if k.flag == name || k.key == name {
				return nil, fail("key %q moved: use %s", name, k.name())
			}
		}
		if _, table := raw[name].(map[string]any); table {
			return nil, fail("unknown section [%s] (the sections: %s)", name, sectionList())
		}
		return nil, fail("unknown key %q (settings live in sections: %s)", name, sectionList())
	}
	fc := new(fileConfig)
	md, err := toml.Decode(string(text), fc)
	if err != nil {
		return nil, fail("%s", tomlError(err, true))
	}
	undecoded := slices.DeleteFunc(md.Undecoded(), func(k toml.Key) bool { return k[0] == warmKey })
	if len(undecoded) > 0 {
		u := undecoded[0]
		msg := fmt.Sprintf("unknown key %q in [%s]", u[len(u)-1], u[0])
		if len(u) == 2 {
			for _, k := range keys {
				if k.key == u[1] || k.flag == u[1] {
					msg += "; did you mean " + k.name() + "?"
					break
				}
			}
		}
		return nil, fail("%s", msg)
	}
	return fc, nil
}

// tomlError says where in the file err happened: "line 3: [disk]
// max-size: want ..." for a value our types refused (opt.UnmarshalTOML),
// "line 1: TOML syntax: expected value ..." otherwise.
func tomlError(err error, value bool) string {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return strings.TrimPrefix(err.Error(), "toml: ")
	}
	msg := "TOML syntax: " + pe.Message
	if section, key, ok := strings.Cut(pe.LastKey, "."); ok && value {
		msg = "[" + section + "] " + key + ": " + pe.Message
	}
	return fmt.Sprintf("line %d: %s", pe.Position.Line, msg)
}

func sectionList() string {
	var names []string
	seen := map[string]bool{}
	for _, k := range fileKeys(new(fileConfig)) {
		if !seen[k.section] {
			seen[k.section] = true
			names = append(names, "["+k.section+"]")
		}
	}
	return strings.Join(names, " ")
}

// applyFile sets the flag of every key fc gives, unless skip claims it
// (given on the command line or in the environment).
func applyFile(fs *flag.FlagSet, fc *fileConfig, skip func(flag string) bool) {
	for _, k := range fileKeys(fc) {
		if !k.value.given() || skip(k.flag) {
			continue
		}
		assign(fs.Lookup(k.flag), k.value.typed())
	}
}

// assign stores v, a value decoded from the config file with the flag's
// own type, in the variable f is bound to: no round trip through a string.
// The flag package's values are pointers to that variable.
func assign(f *flag.Flag, v any) {
	switch fv := f.Value.(type) {
	case listValue:
		fv.setAll(v.([]string))
	case sizeFlag:
		*fv.n = int64(v.(byteSize))
	default:
		dst := reflect.ValueOf(f.Value).Elem()
		dst.Set(reflect.ValueOf(v).Convert(dst.Type()))
	}
}
