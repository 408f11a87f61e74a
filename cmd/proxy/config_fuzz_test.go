package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzServeConfig feeds serve's configuration a TOML file, command-line
// arguments (one per line) and environment (KEY=VALUE lines). It must not
// panic; an error comes without a config and says something; a config
// comes without an error, and the same input gives the same config.
func FuzzServeConfig(f *testing.F) {
	seeds := []struct{ toml, args, env string }{
		{"", "", ""},
		{`listen = "0.0.0.0:6000"` + "\nupstream = [\"https://a.example\", \"https://b.example\"]\nnegative-ttl = \"5m\"\npriority = 20\nverify-signatures = false\n", "", ""},
		{"min-free = \"10GiB\"\nmax-connections = -1\n", "--priority\n10", "NIX_CACHE_PROXY_LISTEN=127.0.0.1:7000\nNIX_CACHE_PROXY_UPSTREAM=https://c.example, https://d.example"},
		{"bogus = 1\n", "", ""},
		{"priority = [1, 2]\n", "", ""},
		{"upstream = \"https://one\"\n", "--upstream=https://two\n--upstream\nhttps://three", ""},
		{"listen = {a = 1}\n", "", ""},
		{"negative-ttl = 5\n", "--negative-ttl\nfive", "NIX_CACHE_PROXY_MIN_FREE=lots"},
		{"[table]\nx = 1\n", "unexpected", ""},
		{"pin = [\"/nix/store/x\"]\n", "--pin\n/nix/store/y\n-h", ""},
		{"\x00", "--", "NIX_CACHE_PROXY_PRIORITY=\x00"},
	}
	for _, s := range seeds {
		f.Add(s.toml, s.args, s.env)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, toml, args, env string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		// The fuzzer's own --config or --netrc-file could name /dev/zero:
		// only the file written here is read.
		for _, s := range append(argv, toml, env) {
			if s := strings.ToLower(s); strings.Contains(s, "config") || strings.Contains(s, "file") {
				return
			}
		}
		vars := map[string]string{}
		for _, kv := range strings.Split(env, "\n") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				vars[k] = v
			}
		}
		if toml != "" {
			file := filepath.Join(dir, "proxy.toml")
			if err := os.WriteFile(file, []byte(toml), 0o644); err != nil {
				t.Fatal(err)
			}
			argv = append([]string{"--config", file}, argv...)
		}
		getenv := func(k string) string { return vars[k] }
		cfg, _, err := parseServeConfig(argv, getenv)
		if err != nil {
			if cfg != nil || err.Error() == "" {
				t.Fatalf("error %q with config %v", err, cfg)
			}
			return
		}
		if cfg == nil {
			t.Fatal("no error and no config")
		}
		again, _, err := parseServeConfig(argv, getenv)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("a second parse of the same input differs: %v\n%+v\n%+v", err, cfg, again)
		}
	})
}
