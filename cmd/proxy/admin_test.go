package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminTarget: every admin command asks the server it is pointed at
// (--server, --listen, or the configured or default address) and fails,
// naming the address, when none answers there; it works on a cache dir
// only with --cache-dir on the command line (when a server is named too,
// only if that one does not answer, and it says so), and a read-only
// command never creates one. Falling back to the default cache dir put pins where the
// service never looked and reported on an empty cache as if it were the
// server's.
func TestAdminTarget(t *testing.T) {
	const path = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-x"
	commands := []struct {
		args     []string
		creates  bool   // may create a missing --cache-dir
		localOut string // stdout on an existing, empty --cache-dir
	}{
		{args: []string{"misses"}, localOut: "no misses recorded"},
		{args: []string{"check", path}, localOut: "narinfo not cached"},
		{args: []string{"gc", "--dry-run"}, localOut: "would prune"},
		{args: []string{"verify"}, localOut: ""},
		{args: []string{"unpin", path}},
		{args: []string{"pin", path}, creates: true},
		{args: []string{"prefetch", path}, creates: true},
		// nix fails on this flake (or is missing) once the cache is open.
		{args: []string{"warm", "path:/nonexistent-flake#x"}, creates: true},
		{args: []string{"coverage", "path:/nonexistent-flake#x"}},
	}
	for _, cmd := range commands {
		t.Run(cmd.args[0], func(t *testing.T) {
			xdg := t.TempDir()
			t.Setenv("XDG_CACHE_HOME", xdg)
			// The server's address when no flag names one: not the real
			// default, where something may listen.
			configured := freeAddr(t)
			t.Setenv("NIX_CACHE_PROXY_LISTEN", configured)
			t.Setenv("NIX_CACHE_PROXY_UPSTREAM", "http://"+freeAddr(t))
			existing, missing := t.TempDir(), filepath.Join(t.TempDir(), "cache")
			free := freeAddr(t)
			tests := []struct {
				name   string
				flags  []string
				code   int
				stderr string
			}{
				{"--server, nothing listening", []string{"--server", "http://" + free}, 1, "no server answers at http://" + free},
				{"--listen, nothing listening", []string{"--listen", free}, 1, "no server answers at http://" + free},
				{"no flag, nothing at the configured address", nil, 1, "no server answers at http://" + configured + " (connection refused): start it, name the running one with --server URL, or pass --cache-dir DIR"},
			}
			if !cmd.creates {
				tests = append(tests, struct {
					name   string
					flags  []string
					code   int
					stderr string
				}{"--cache-dir not there", []string{"--cache-dir", missing}, 1, "--cache-dir " + missing + ": no such directory"})
			}
			for _, tt := range tests {
				var stdout, stderr bytes.Buffer
				code := run(context.Background(), append(append([]string{}, cmd.args...), tt.flags...), &stdout, &stderr)
				if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
					t.Errorf("%s: exit %d, stderr %q; want %d and %q", tt.name, code, stderr.String(), tt.code, tt.stderr)
				}
				if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
					t.Errorf("%s: stderr has %d lines, want one", tt.name, n+1)
				}
				for _, dir := range []string{filepath.Join(xdg, "nix-cache-proxy"), missing} {
					if _, err := os.Stat(dir); err == nil {
						t.Fatalf("%s: created %s", tt.name, dir)
					}
				}
			}

			// With --cache-dir on the command line the command works there.
			if cmd.creates {
				// The fetch's log lines and the command's share stderr.
				var out lockedBuffer
				run(context.Background(), append(append([]string{}, cmd.args...), "--cache-dir", missing), &out, &out)
				if _, err := os.Stat(filepath.Join(missing, "index.db")); err != nil {
					t.Errorf("%s --cache-dir (not there yet): %v; output %q", cmd.args[0], err, out.Bytes())
				}
				return
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append(append([]string{}, cmd.args...), "--cache-dir", existing), &stdout, &stderr)
			if strings.Contains(stderr.String(), "server") || !strings.Contains(stdout.String(), cmd.localOut) {
				t.Errorf("--cache-dir: exit %d, stdout %q, stderr %q; want %q on stdout, no word of a server", code, stdout.String(), stderr.String(), cmd.localOut)
			}
			// With a server named too, the dir is used when it does not
			// answer, and the command says so.
			for _, named := range [][]string{{"--listen", free}, {"--server", "http://" + free}} {
				stdout.Reset()
				stderr.Reset()
				code := run(context.Background(), append(append(append([]string{}, cmd.args...), "--cache-dir", existing), named...), &stdout, &stderr)
				want := "no server answers at http://" + free + "; working on --cache-dir " + existing + "\n"
				if !strings.HasPrefix(stderr.String(), "nix-cache-proxy "+cmd.args[0]+": "+want) || !strings.Contains(stdout.String(), cmd.localOut) {
					t.Errorf("--cache-dir %s: exit %d, stdout %q, stderr %q; want %q on stdout, %q on stderr", named[0], code, stdout.String(), stderr.String(), cmd.localOut, want)
				}
			}
		})
	}
}

// TestCheckBadPathMessage: a bad path is reported once, in the user's
// words, not as every layer's name for "bad request".
func TestCheckBadPathMessage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "foo", "--cache-dir", t.TempDir()}, &stdout, &stderr)
	const want = `nix-cache-proxy check: "foo" is not a store path (want /nix/store/<hash>-<name>, <hash>-<name> or <hash>)` + "\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr.String(), want)
	}
}
