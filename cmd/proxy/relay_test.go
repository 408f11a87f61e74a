package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRelayCommand runs `relay` in-process against a loopback cache:
// forwarded while the cache answers, answered itself once it is gone, and
// both counted in /metrics.
func TestRelayCommand(t *testing.T) {
	const hash = "0123456789abcdfghijklmnpqrsvwxyz"
	cache := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nix-cache-info":
			io.WriteString(w, "StoreDir: /nix/store\nPriority: 31\n")
		case "/" + hash + ".narinfo":
			io.WriteString(w, "StorePath: /nix/store/"+hash+"-x\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer cache.Close()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"relay", "--cache", cache.URL, "--listen", addr, "--backoff-max", "50ms", "--log-level", "debug"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("relay exited %d\n%s", code, stderr.Bytes())
		}
	}()
	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v\n%s", path, err, stderr.Bytes())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if code, body := get("/" + hash + ".narinfo"); code != 200 || !strings.HasPrefix(body, "StorePath:") {
		t.Errorf("narinfo with the cache up: %d %q", code, body)
	}
	if _, body := get("/healthz"); !strings.Contains(body, cache.URL) {
		t.Errorf("healthz: %q, want it to name the cache", body)
	}
	cache.CloseClientConnections()
	cache.Close()
	if code, _ := get("/" + hash + ".narinfo"); code != http.StatusNotFound {
		t.Errorf("narinfo with the cache gone: %d, want 404", code)
	}
	if code, body := get("/nix-cache-info"); code != 200 || !strings.Contains(body, "Priority: 31") {
		t.Errorf("nix-cache-info with the cache gone: %d %q, want the cache's last", code, body)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`nix_cache_proxy_relay_requests_total{answer="forwarded",kind="narinfo"} 1`,
		`nix_cache_proxy_relay_requests_total{answer="self",kind="narinfo"} 1`,
		`nix_cache_proxy_relay_cache_up{cache="` + cache.URL + `"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	log := stderr.Bytes()
	// At info level too: each change of reachability says what the relay
	// did since the last one.
	for _, want := range []string{"relay: forwarded", "relay: LAN cache unreachable", "forwarded_before=1", "relay: answered itself"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestRelayCommandFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"relay"}, 1, "no LAN cache given"},
		{[]string{"relay", "--cache", "ftp://x"}, 1, "want http(s)://"},
		{[]string{"relay", "--cache", "http://x", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"relay", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"relay", "-h"}, 0, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
