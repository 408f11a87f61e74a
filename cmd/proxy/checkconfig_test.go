package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckConfig(t *testing.T) {
	good := writeFile(t, "good.toml", `
[http]
listen = "0.0.0.0:5575"

[upstream]
urls = ["https://mycache.cachix.org", "https://cache.nixos.org"]
trusted-public-keys = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]

[misses]
negative-ttl = "5m"

[disk]
pins = ["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-builder.img"]
min-free = "10GiB"
`)
	token := writeFile(t, "token", "s3cret\n")
	netrc := writeFile(t, "netrc", "machine mycache.cachix.org password tok\n")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // substrings of stdout (code 0) or stderr (code 1)
	}{
		{"defaults", nil, 0, []string{"[http]\nlisten = \"127.0.0.1:5575\"\n", "[upstream]\nurls = [\"https://cache.nixos.org\"]\n", `min-free = "1GiB"`, `max-size = "0"`, `prune-after = "720h"`}},
		{"file", []string{"--config", good}, 0, []string{`listen = "0.0.0.0:5575"`, "[misses]\nnegative-ttl = \"5m\"\n", `urls = ["https://mycache.cachix.org", "https://cache.nixos.org"]`, `min-free = "10GiB"`}},
		{"flag beats file", []string{"--config", good, "--listen", "[::]:6000"}, 0, []string{`listen = "[::]:6000"`}},
		{"secret files", []string{"--admin-token-file", token, "--netrc-file", netrc}, 0, []string{"[admin]\ntoken = \"\"\ntoken-file = \"" + token + "\"\n"}},
		{"token is redacted", []string{"--admin-token", "s3cret"}, 0, []string{`token = "(redacted)"`}},
		{"unknown key", []string{"--config", writeFile(t, "typo.toml", "[upstream]\nupstreams = [\"https://a\"]")}, 1, []string{`typo.toml: unknown key "upstreams" in [upstream]`}},
		{"bad key", []string{"--trusted-public-key", "nope"}, 1, []string{"--trusted-public-key"}},
		{"no key to verify with", []string{"--config", writeFile(t, "nokeys.toml", "[upstream]\ntrusted-public-keys = []")}, 1, []string{"--trusted-public-key: none given while --verify-signatures is on", "(set by [upstream] trusted-public-keys in ", "nokeys.toml)"}},
		{"bad upstream", []string{"--upstream", "ftp://x"}, 1, []string{"--upstream"}},
		{"bad status", []string{"--upstream-error-status", "200"}, 1, []string{"--upstream-error-status"}},
		{"bad listen", []string{"--listen", "5575"}, 1, []string{"--listen"}},
		{"bad metrics port", []string{"--metrics-listen", ":metrics"}, 1, []string{"--metrics-listen"}},
		{"bad log format", []string{"--log-format", "xml"}, 1, []string{"--log-format"}},
		{"bad pin", []string{"--pin", "/nix/store/short-x"}, 1, []string{"--pin"}},
		{"negative duration", []string{"--negative-ttl", "-1m"}, 1, []string{"--negative-ttl"}},
		{"negative max connections", []string{"--max-connections", "-1"}, 1, []string{"--max-connections"}},
		{"negative write stall", []string{"--write-stall-timeout", "-1s"}, 1, []string{"--write-stall-timeout"}},
		{"missing netrc", []string{"--netrc-file", "/nonexistent/netrc"}, 1, []string{"--netrc-file"}},
		{"missing token file", []string{"--admin-token-file", "/nonexistent/token"}, 1, []string{"--admin-token-file"}},
		{"empty token file", []string{"--admin-token-file", writeFile(t, "empty", "\n")}, 1, []string{"--admin-token-file"}},
		{"two tokens", []string{"--admin-token", "x", "--admin-token-file", token}, 1, []string{"give one of them"}},
		{"short write token", []string{"--write-token-file", token}, 1, []string{"at least 16"}},
		{"missing secret key", []string{"--secret-key-file", "/nonexistent/key"}, 1, []string{"--secret-key-file"}},
		{"zero upload size", []string{"--upload-max-size", "0"}, 1, []string{"--upload-max-size"}},
		{"stray argument", []string{"serve"}, 1, []string{"unexpected argument"}},
		{"s3 storage", []string{"--storage", "s3://cache/fleet?endpoint=s3.lan:7070&scheme=http"}, 0, []string{`storage = "s3://cache/fleet?endpoint=s3.lan:7070&scheme=http"`}},
		{"bad storage", []string{"--storage", "/var/cache/x"}, 1, []string{"--storage"}},
		{"eviction on a shared bucket", []string{"--storage", "s3://cache", "--max-size", "10GiB"}, 0, []string{`max-size = "10GiB"`, `evict-grace = "1h"`}},
		{"retention on a shared bucket", []string{"--storage", "s3://cache", "--keep-latest", "x*=2"}, 0, []string{`keep-latest = ["x*=2"]`}},
		{"grace within a fill lease", []string{"--storage", "s3://cache", "--max-size", "10GiB", "--evict-grace", "20s"}, 1, []string{"--evict-grace 20s", "--fill-lease-ttl 30s"}},
		{"grace within publishing", []string{"--storage", "s3://cache", "--max-size", "10GiB", "--evict-grace", "2m", "--fleet-interval", "1m"}, 1, []string{"--evict-grace 2m0s", "3 times --fleet-interval"}},
		{"fleet interval too short", []string{"--storage", "s3://cache", "--fleet-interval", "1ms"}, 1, []string{"--fleet-interval"}},
		{"recompress default", nil, 0, []string{`recompress = "auto"`}},
		{"recompress auto on a shared bucket", []string{"--storage", "s3://cache", "--recompress", "auto"}, 0, []string{`recompress = "auto"`}},
		{"recompress zstd on a shared bucket", []string{"--storage", "s3://cache", "--recompress", "zstd"}, 1, []string{"--recompress zstd: not supported with --storage s3://"}},
		{"recompress bogus", []string{"--recompress", "xz"}, 1, []string{"must be auto, zstd or off"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"check-config"}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, stderr.String())
			}
			out := stdout.String()
			if code != 0 {
				out = stderr.String()
				if strings.Count(out, "\n") != 1 {
					t.Errorf("error is not one line: %q", out)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(stdout.String(), "s3cret") {
				t.Errorf("the admin token is printed:\n%s", stdout.String())
			}
		})
	}
}

// TestCheckConfigRoundTrip feeds check-config's output back to it as the
// config file: what it prints must be a config that means the same.
func TestCheckConfigRoundTrip(t *testing.T) {
	args := []string{"--listen", "0.0.0.0:5575", "--upstream", "https://a.example", "--upstream", "https://b.example",
		"--negative-ttl", "90s", "--verify-signatures=false", "--min-free", "500MB", "--pin", "0123456789abcdfghijklmnpqrsvwxyz"}
	var first, second bytes.Buffer
	if code := run(context.Background(), append([]string{"check-config"}, args...), &first, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	file := writeFile(t, "effective.toml", first.String())
	if code := run(context.Background(), []string{"check-config", "--config", file}, &second, os.Stderr); code != 0 {
		t.Fatalf("exit %d reading its own output:\n%s", code, first.String())
	}
	if diff := cmp.Diff(first.String(), second.String()); diff != "" {
		t.Errorf("(-flags +file):\n%s", diff)
	}
}

func TestCheckConfigEnvironment(t *testing.T) {
	t.Setenv("NIX_CACHE_PROXY_LISTEN", "0.0.0.0:7000")
	var out bytes.Buffer
	if code := run(context.Background(), []string{"check-config"}, &out, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out.String(), "[http]\nlisten = \"0.0.0.0:7000\"\n") {
		t.Errorf("environment not applied:\n%s", out.String())
	}
	t.Setenv("NIX_CACHE_PROXY_PRIORITY", "-3")
	if code := run(context.Background(), []string{"check-config"}, new(bytes.Buffer), new(bytes.Buffer)); code != 1 {
		t.Errorf("negative priority from the environment: exit %d, want 1", code)
	}
}

func TestHealthcheck(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			w.Write([]byte("ok\n"))
		case r.URL.Path == "/readyz" && ready.Load():
			w.Write([]byte("ready\n"))
		case r.URL.Path == "/readyz":
			http.Error(w, "low on disk space", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	tests := []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"healthy", []string{"--server", srv.URL}, true, "/healthz: ok"},
		{"ready", []string{"--server", srv.URL, "--ready"}, true, "/readyz: ready"},
		{"not ready", []string{"--server", srv.URL, "--ready"}, false, "503"},
		{"nothing listens", []string{"--server", down.URL}, false, "connection refused"},
		{"from --listen", []string{"--listen", strings.TrimPrefix(srv.URL, "http://")}, true, "/healthz: ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.name != "not ready")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"healthcheck"}, tt.args...), &stdout, &stderr)
			if (code == 0) != tt.ok {
				t.Fatalf("exit %d; stderr %q", code, stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tt.want) {
				t.Errorf("output %q lacks %q", out, tt.want)
			}
		})
	}
}
