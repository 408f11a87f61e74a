package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReloadOnSIGHUP sends SIGHUP to the built binary: it re-reads the
// config file, the token files and the upstream list, checks them, and
// serves with them from the same process and socket, refusing no
// connection meanwhile; a configuration that does not pass is refused with
// a logged error and the running one stays. SIGHUP used to kill the
// server at once, in the middle of whatever it served.
func TestReloadOnSIGHUP(t *testing.T) {
	bin := e2eBinary(t, false)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.toml")
	tokenFile := filepath.Join(dir, "admin-token")
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	upstreamA, upstreamB := "http://"+freeAddr(t), "http://"+freeAddr(t)
	write(config, "[http]\npriority = 30\n[upstream]\nurls = [\""+upstreamA+"\"]\n")
	write(tokenFile, "old-token\n")
	p := startProxyArgs(t, bin, t.TempDir(), "k:"+strings.Repeat("A", 43)+"=", nil,
		"--config", config, "--admin-token-file", tokenFile)

	// A new connection for every request: a keep-alive connection the
	// drain closes under a request fails as on SIGTERM (clients retry it),
	// while a refused or dropped new connection is what this test catches.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path, token string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, p.url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	want := func(what, path, token string, status int, body string) {
		t.Helper()
		code, got, err := get(path, token)
		if err != nil || code != status || !strings.Contains(got, body) {
			t.Errorf("%s: GET %s: %d %q (%v); want %d with %q", what, path, code, got, err, status, body)
		}
	}
	want("before", "/nix-cache-info", "", 200, "Priority: 30")
	want("before", "/_/pins", "old-token", 200, "[")

	// Clients keep asking while the signal arrives: none is refused.
	var stop atomic.Bool
	var failures, answered atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if code, _, err := get("/nix-cache-info", ""); err != nil || code != 200 {
					failures.Add(1)
					lastErr.Store(err)
				} else {
					answered.Add(1)
				}
			}
		})
	}
	// hup sends SIGHUP and waits for the log lines logs, in this order.
	hup := func(logs ...string) {
		t.Helper()
		from := len(p.output.Bytes())
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for _, l := range logs {
			for {
				if i := strings.Index(string(p.output.Bytes()[from:]), l); i >= 0 {
					from += i + len(l)
					break
				}
				if p.exited() {
					t.Fatalf("the server exited on SIGHUP: %v", p.err)
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the log 20 s after SIGHUP", l)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}

	write(config, "[http]\npriority = 40\n[upstream]\nurls = [\""+upstreamB+"\"]\n")
	write(tokenFile, "new-token\n")
	hup("reloading: draining", "drained for the reload", "msg=serving")
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 || answered.Load() == 0 {
		t.Errorf("%d requests failed during the reload (last: %v), %d answered", n, lastErr.Load(), answered.Load())
	}
	want("reloaded", "/nix-cache-info", "", 200, "Priority: 40")
	want("reloaded", "/_/pins", "new-token", 200, "[")
	want("reloaded", "/_/pins", "old-token", 401, "")
	out := string(p.output.Bytes())
	if i := strings.LastIndex(out, "msg=serving"); i < 0 || !strings.Contains(out[i:], upstreamB) || strings.Contains(out[i:strings.Index(out[i:], "\n")+i], upstreamA) {
		t.Errorf("the last 'serving' line does not name the new upstream %s alone:\n%s", upstreamB, out)
	}

	// A configuration that does not pass is refused; the running one stays.
	write(config, "[http]\npriority = 50\nno-such-key = 1\n")
	hup("reload refused")
	write(config, "[http]\npriority = 60\n")
	write(tokenFile, "")
	hup("reload refused")
	want("refused", "/nix-cache-info", "", 200, "Priority: 40")
	want("refused", "/_/pins", "new-token", 200, "[")

	// One that passes the checks but cannot start (its metrics port is
	// taken) gives the socket back to the previous one.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	write(config, "[http]\npriority = 70\nmetrics-listen = \""+busy.Addr().String()+"\"\n[upstream]\nurls = [\""+upstreamB+"\"]\n")
	write(tokenFile, "new-token\n")
	hup("starting again with the previous one", "msg=serving")
	want("failed to start", "/nix-cache-info", "", 200, "Priority: 40")
	p.terminate(t)
}
