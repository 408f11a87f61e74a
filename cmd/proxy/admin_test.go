package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestAdminServerFallback: only the implicit default server (the --listen
// address) falls back to opening the cache dir; a --server given
// explicitly that does not answer is an error, or `misses` would print
// another cache's misses (or none) and exit 0.
func TestAdminServerFallback(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{
			name:   "explicit --server, nothing listening",
			args:   []string{"--server", "http://" + freeAddr(t)},
			code:   1,
			stderr: "no server answers there",
		},
		{
			name:   "default server, nothing listening: the cache dir",
			args:   []string{"--listen", freeAddr(t)},
			code:   0,
			stdout: "no misses recorded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"misses", "--cache-dir", t.TempDir()}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderr)
			}
			if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
				t.Errorf("stderr has %d lines, want one at most", n+1)
			}
		})
	}
}

// TestCheckBadPathMessage: a bad path is reported once, in the user's
// words, not as every layer's name for "bad request".
func TestCheckBadPathMessage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "foo", "--listen", freeAddr(t), "--cache-dir", t.TempDir()}, &stdout, &stderr)
	const want = `nix-cache-proxy check: "foo" is not a store path (want /nix/store/<hash>-<name>, <hash>-<name> or <hash>)` + "\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr.String(), want)
	}
}
