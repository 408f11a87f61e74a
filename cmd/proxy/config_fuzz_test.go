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
// comes without an error, the same input gives the same config, and
// check-config's output of it, read back, prints the same.
func FuzzServeConfig(f *testing.F) {
	seeds := []struct{ toml, args, env string }{
		{"", "", ""},
		{"[http]\nlisten = \"0.0.0.0:6000\"\npriority = 20\n[upstream]\nurls = [\"https://a.example\", \"https://b.example\"]\nverify-signatures = false\n[misses]\nnegative-ttl = \"5m\"\n", "", ""},
		{"[disk]\nmin-free = \"10GiB\"\nmax-size = \"200GiB\"\n[http]\nmax-connections = -1\n", "--priority\n10", "NIX_CACHE_PROXY_LISTEN=127.0.0.1:7000\nNIX_CACHE_PROXY_UPSTREAM=https://c.example, https://d.example"},
		{"bogus = 1\n", "", ""},
		{"negative-ttl = \"5m\"\n", "", ""},
		{"[disk]\nmax-size = 200\n", "", "NIX_CACHE_PROXY_UPLOAD_MAX_SIZE=7"},
		{"[http]\npriority = [1, 2]\n", "", ""},
		{"[upstream]\nurls = \"https://one\"\n", "--upstream=https://two\n--upstream\nhttps://three", ""},
		{"[http]\nlisten = {a = 1}\n", "", ""},
		{"[misses]\nnegative-ttl = 5\n", "--negative-ttl\nfive", "NIX_CACHE_PROXY_MIN_FREE=lots"},
		{"[table]\nx = 1\n", "unexpected", ""},
		{"[http]\ncache-dir = \"/x\"\n", "", ""},
		{"[disk]\npins = [\"/nix/store/x\"]\n", "--pin\n/nix/store/y\n-h", ""},
		{"[fleet]\nstorage = \"s3://b\"\nevict-grace = \"2h\"\n[disk]\nmax-size = \"1.5TiB\"\nkeep-latest = [\"*.img=2\"]\n", "", ""},
		{"[admin]\ntoken = \"s3\\\"cret\\u0001\"\n", "", ""},
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
		again, fs, err := parseServeConfig(argv, getenv)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("a second parse of the same input differs: %v\n%+v\n%+v", err, cfg, again)
		}
		// check-config's output is a config file that means the same.
		var printed, reread strings.Builder
		if err := writeSettings(&printed, fs); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "printed.toml")
		if err := os.WriteFile(file, []byte(printed.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		_, fs, err = parseServeConfig([]string{"--config", file}, func(string) string { return "" })
		if err != nil {
			t.Fatalf("check-config's output is refused: %v\n%s", err, printed.String())
		}
		if err := writeSettings(&reread, fs); err != nil {
			t.Fatal(err)
		}
		if printed.String() != reread.String() {
			t.Fatalf("check-config's output read back prints otherwise:\n%s\n%s", printed.String(), reread.String())
		}
	})
}
