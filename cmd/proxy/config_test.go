package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "proxy.toml")
	if err := os.WriteFile(file, []byte(`
listen = "0.0.0.0:6000"
upstream = ["https://a.example", "https://b.example"]
negative-ttl = "5m"
priority = 20
verify-signatures = false
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
	os.WriteFile(typo, []byte("upstreams = [\"https://a\"]\n"), 0o644)
	broken := filepath.Join(dir, "broken.toml")
	os.WriteFile(broken, []byte("listen = \n"), 0o644)
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
