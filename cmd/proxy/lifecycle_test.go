package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeStartupErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	os.WriteFile(notADir, nil, 0o644)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"port in use", []string{"--listen", busy.Addr().String(), "--cache-dir", t.TempDir()}, "address already in use"},
		{"cache dir is a file", []string{"--listen", "127.0.0.1:0", "--cache-dir", notADir}, "--cache-dir"},
		{"bad key", []string{"--listen", "127.0.0.1:0", "--trusted-public-key", "nope"}, "--trusted-public-key"},
		{"bad upstream", []string{"--listen", "127.0.0.1:0", "--upstream", "ftp://x"}, "--upstream"},
		{"bad status", []string{"--listen", "127.0.0.1:0", "--cache-dir", t.TempDir(), "--upstream-error-status", "200"}, "status"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), append([]string{"serve"}, tt.args...), new(bytes.Buffer), &stderr)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			msg := stderr.String()
			if !strings.Contains(msg, tt.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("stderr = %q, want one line mentioning %q", msg, tt.want)
			}
		})
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--cache-dir", t.TempDir()}, new(bytes.Buffer), &stderr)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
}

// TestCheckUpstreamURLArgument: `check --upstream http://x PATH` reads as a
// bare --upstream plus a path "http://x"; it must say so, not complain that
// a URL is not a store path.
func TestCheckUpstreamURLArgument(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "--upstream", "http://cache.example",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-x", "--server", "http://127.0.0.1:1"},
		new(bytes.Buffer), &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "--upstream=URL") {
		t.Errorf("exit %d, stderr %q; want 1 and a hint at --upstream=URL", code, stderr.String())
	}
}
