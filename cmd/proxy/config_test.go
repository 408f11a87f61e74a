package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "proxy.toml")
	if err := os.WriteFile(file, []byte(`
[http]
listen = "0.0.0.0:6000"
priority = 20

[upstream]
urls = ["https://a.example", "https://b.example"]
verify-signatures = false

[misses]
negative-ttl = "5m"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *serveConfig) []any
		exp  []any
	}{
		{
			name: "defaults",
			want: func(c *serveConfig) []any {
				return []any{c.listen, c.upstreams.values, c.negativeTTL, c.priority, c.verifySignatures}
			},
			exp: []any{"127.0.0.1:5575", []string{defaultUpstream}, time.Minute, 30, true},
		},
		{
			name: "file",
			args: []string{"--config", file},
			want: func(c *serveConfig) []any {
				return []any{c.listen, c.upstreams.values, c.negativeTTL, c.priority, c.verifySignatures}
			},
			exp: []any{"0.0.0.0:6000", []string{"https://a.example", "https://b.example"}, 5 * time.Minute, 20, false},
		},
		{
			name: "env beats file, flag beats env",
			args: []string{"--config", file, "--priority", "10"},
			env: map[string]string{
				"NIX_CACHE_PROXY_LISTEN":   "127.0.0.1:7000",
				"NIX_CACHE_PROXY_UPSTREAM": "https://c.example, https://d.example",
				"NIX_CACHE_PROXY_PRIORITY": "15",
			},
			want: func(c *serveConfig) []any {
				return []any{c.listen, c.upstreams.values, c.negativeTTL, c.priority, c.verifySignatures}
			},
			exp: []any{"127.0.0.1:7000", []string{"https://c.example", "https://d.example"}, 5 * time.Minute, 10, false},
		},
		{
			name: "config file from env",
			env:  map[string]string{"NIX_CACHE_PROXY_CONFIG": file},
			want: func(c *serveConfig) []any { return []any{c.listen} },
			exp:  []any{"0.0.0.0:6000"},
		},
		{
			name: "repeated flag replaces the default",
			args: []string{"--upstream", "https://x.example", "--upstream", "https://y.example"},
			want: func(c *serveConfig) []any { return []any{c.upstreams.values, c.keys.values} },
			exp:  []any{[]string{"https://x.example", "https://y.example"}, []string{defaultKey}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parseServeConfig(tt.args, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.exp, tt.want(cfg)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.toml")
	os.WriteFile(typo, []byte("[upstream]\nurl = [\"https://a\"]\n"), 0o644)
	broken := filepath.Join(dir, "broken.toml")
	os.WriteFile(broken, []byte("[http]\nlisten = \n"), 0o644)
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"--bogus"}, nil},
		{"bad duration", []string{"--negative-ttl", "soon"}, nil},
		{"bad env", nil, map[string]string{"NIX_CACHE_PROXY_PRIORITY": "high"}},
		{"unknown config key", []string{"--config", typo}, nil},
		{"broken config", []string{"--config", broken}, nil},
		{"missing config", []string{"--config", filepath.Join(dir, "nope.toml")}, nil},
		{"stray argument", []string{"extra"}, nil},
		{"mDNS for a loopback listener", []string{"--advertise-mdns"}, nil},
		{"mDNS for localhost", []string{"--advertise-mdns", "--listen", "localhost:5575"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseServeConfig(tt.args, func(k string) string { return tt.env[k] })
			if err == nil || errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want a parse error", err)
			}
		})
	}
}

func TestParseInterspersedFlags(t *testing.T) {
	cfg := &serveConfig{}
	fs := newServeFlags("check", cfg)
	closure := fs.Bool("closure", false, "")
	args := []string{"--closure", "/nix/store/a-x", "--cache-dir", "/tmp/c", "b", "--", "--listen", "-x"}
	if err := parseInterspersed(fs, args); err != nil {
		t.Fatal(err)
	}
	if !*closure || cfg.cacheDir != "/tmp/c" || cfg.listen != "127.0.0.1:5575" {
		t.Errorf("closure %v, cache-dir %q, listen %q", *closure, cfg.cacheDir, cfg.listen)
	}
	if diff := cmp.Diff([]string{"/nix/store/a-x", "b", "--listen", "-x"}, fs.Args()); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}

func TestUpstreamBreakerFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" means accepted
	}{
		{[]string{"--upstream-failure-threshold", "1", "--upstream-backoff-max", "5m"}, ""},
		{[]string{"--upstream-failure-threshold", "0"}, "--upstream-failure-threshold 0: must be at least 1"},
		{[]string{"--upstream-backoff-max", "0s"}, "--upstream-backoff-max 0s: must be positive"},
	}
	for _, tt := range tests {
		_, _, err := parseServeConfig(tt.args, func(string) string { return "" })
		if got := fmt.Sprint(err); (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && got != tt.wantErr) {
			t.Errorf("%v: err %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}

// TestBadValueMessages: a bad value says what was expected and where it
// came from, on the command line, in the environment and in the config
// file alike. `--negative-ttl 5` once said only "parse error".
func TestBadValueMessages(t *testing.T) {
	dir := t.TempDir()
	file := func(body string) string {
		p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".toml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		toml string
		want string // the whole message; CONFIG stands for the file's path
	}{
		{name: "duration flag", args: []string{"--negative-ttl", "5"},
			want: `--negative-ttl: want a duration like 30s, 5m or 1h, got "5"`},
		{name: "duration flag with =", args: []string{"--upstream-timeout=ten"},
			want: `--upstream-timeout: want a duration like 30s, 5m or 1h, got "ten"`},
		{name: "int flag", args: []string{"--priority", "high"},
			want: `--priority: want a whole number, got "high"`},
		{name: "bool flag", args: []string{"--verify-signatures=maybe"},
			want: `--verify-signatures: want true or false, got "maybe"`},
		{name: "size flag", args: []string{"--min-free", "lots"},
			want: `--min-free: want a size like 10GiB or 500MB, got "lots"`},
		{name: "unknown flag", args: []string{"--negative-tl", "5s"}, want: `unknown flag --negative-tl`},
		{name: "no value", args: []string{"--negative-ttl"}, want: `--negative-ttl: needs a value`},
		{name: "duration env", env: map[string]string{"NIX_CACHE_PROXY_NEGATIVE_TTL": "5"},
			want: `NIX_CACHE_PROXY_NEGATIVE_TTL: want a duration like 30s, 5m or 1h, got "5"`},
		{name: "int env", env: map[string]string{"NIX_CACHE_PROXY_MISS_LOG_MAX": "10k"},
			want: `NIX_CACHE_PROXY_MISS_LOG_MAX: want a whole number, got "10k"`},
		{name: "duration in the file as a number", toml: "[misses]\nnegative-ttl = 5\n",
			want: `CONFIG: line 2: [misses] negative-ttl: want a duration like 30s, 5m or 1h, got 5`},
		{name: "int in the file as a string", toml: "[http]\n\npriority = \"first\"\n",
			want: `CONFIG: line 3: [http] priority: want a whole number, got "first"`},
		{name: "bool in the file as a string", toml: "[upstream]\nverify-signatures = \"no\"\n",
			want: `CONFIG: line 2: [upstream] verify-signatures: want true or false, got "no"`},
		{name: "list in the file as a string", toml: "[upstream]\nurls = \"https://a.example\"\n",
			want: `CONFIG: line 2: [upstream] urls: want a list like ["a", "b"], got "https://a.example"`},
		{name: "size in the file without a unit", toml: "[disk]\nmax-size = 200\n",
			want: `CONFIG: line 2: [disk] max-size: want a size with a unit like 10GiB or 500MB, got "200": did you mean 200GiB?`},
		{name: "syntax error", toml: "[http]\nlisten = \n",
			want: `CONFIG: line 2: TOML syntax: expected value but found '\n' instead`},
		{name: "old flat key", toml: "negative-ttl = \"5m\"\n",
			want: `CONFIG: key "negative-ttl" moved: use [misses] negative-ttl`},
		{name: "old flat list", toml: "upstream = [\"https://a.example\"]\n",
			want: `CONFIG: key "upstream" moved: use [upstream] urls`},
		{name: "old flat key renamed", toml: "log-level = \"debug\"\n",
			want: `CONFIG: key "log-level" moved: use [log] level`},
		{name: "key in the wrong section", toml: "[http]\ncache-dir = \"/x\"\n",
			want: `CONFIG: unknown key "cache-dir" in [http]; did you mean [disk] cache-dir?`},
		{name: "flag name in a section", toml: "[upstream]\nupstream-timeout = \"5s\"\n",
			want: `CONFIG: unknown key "upstream-timeout" in [upstream]; did you mean [upstream] timeout?`},
		{name: "unknown section", toml: "[cache]\nx = 1\n",
			want: `CONFIG: unknown section [cache] (the sections: [http] [log] [upstream] [disk] [misses] [uploads] [signing] [admin] [fleet])`},
		{name: "bad value from the file", toml: "[upstream]\nerror-status = 200\n",
			want: `--upstream-error-status: upstream error status 200 is not one of 404, 502, 503, 504 (set by [upstream] error-status in CONFIG)`},
		{name: "bad value from the environment", env: map[string]string{"NIX_CACHE_PROXY_LISTEN": "5575"},
			want: `--listen "5575": address 5575: missing port in address (set by NIX_CACHE_PROXY_LISTEN)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			want := tt.want
			if tt.toml != "" {
				p := file(tt.toml)
				args = append(args, "--config", p)
				want = strings.ReplaceAll(want, "CONFIG", p)
			}
			_, _, err := parseServeConfig(args, func(k string) string { return tt.env[k] })
			if err == nil || err.Error() != want {
				t.Errorf("error %v\nwant  %s", err, want)
			}
		})
	}
	// The values are the flag package's again after parsing: -h names
	// their types from them.
	_, fs, err := parseServeConfig([]string{"--negative-ttl", "5s"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if name, _ := flag.UnquoteUsage(fs.Lookup("negative-ttl")); name != "duration" {
		t.Errorf("-h would show --negative-ttl taking %q, want duration", name)
	}
}

func TestRecompressOn(t *testing.T) {
	for _, tt := range []struct {
		recompress, storage string
		want                bool
	}{
		{"auto", "", true},
		{"auto", "s3://cache", false},
		{"zstd", "", true},
		{"off", "", false},
		{"off", "s3://cache", false},
	} {
		cfg := serveConfig{recompress: tt.recompress, storage: tt.storage}
		if got := cfg.recompressOn(); got != tt.want {
			t.Errorf("--recompress %s --storage %q: on = %v, want %v", tt.recompress, tt.storage, got, tt.want)
		}
	}
}
