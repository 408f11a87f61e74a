package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// crashpointBinary is the proxy built with the crashpoints tag: it kills
// itself at the point NIX_CACHE_PROXY_CRASHPOINT names.
var crashpointBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "nix-cache-proxy-crashpoints")
	args := []string{"build", "-tags", "crashpoints", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -tags crashpoints: %w\n%s", err, out)
	}
	return bin, nil
})

// TestCrashPoints kills the proxy exactly in the narrow windows between two
// durable steps, where random kills rarely land: after a NAR's commit
// intent and before its rename, after the rename and before its index row,
// after eviction deleted rows and before it removed their files, and after
// verify --repair dropped a row and before it removed the bad file. Each
// time the restarted proxy verifies clean and serves the NAR identically.
func TestCrashPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	bin, err := crashpointBinary()
	if err != nil {
		t.Fatal(err)
	}
	up := fakeupstream.New(t)
	var items []*fakeupstream.Item
	for i := range 2 {
		items = append(items, up.Add(fakeupstream.Path{Name: fmt.Sprintf("c%d", i), File: fakeupstream.RandomBytes(200 << 10), Compression: "none"}))
	}
	key := up.PublicKey().String()
	cacheDir := t.TempDir()
	narURL := func(p *proxyProcess, it *fakeupstream.Item) string { return p.url + "/nar/" + it.FileHash + ".nar" }
	fetch := func(p *proxyProcess, it *fakeupstream.Item) ([]byte, error) {
		resp, err := http.Get(p.url + "/" + it.Hash + ".narinfo")
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		resp, err = http.Get(narURL(p, it))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	// armed starts the proxy set to die at point; died waits for that.
	armed := func(point string, extra ...string) *proxyProcess {
		t.Setenv("NIX_CACHE_PROXY_CRASHPOINT", point)
		defer t.Setenv("NIX_CACHE_PROXY_CRASHPOINT", "")
		return startProxyArgs(t, bin, cacheDir, key, []string{up.URL()}, extra...)
	}
	died := func(p *proxyProcess, point string) {
		t.Helper()
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("the proxy did not reach crash point %s", point)
		}
	}
	// restartClean restarts the proxy unarmed and checks verify --deep and
	// that the first fetched items are served identically.
	restartClean := func(point string, fetched int) *proxyProcess {
		t.Helper()
		p := startProxyArgs(t, bin, cacheDir, key, []string{up.URL()})
		if r := cli(t, bin, -1, "verify", "--deep", "--server="+p.url); r.code != 0 {
			t.Fatalf("after a kill at %s: verify exit %d\n%s%s", point, r.code, r.stdout, r.stderr)
		}
		for _, it := range items[:fetched] {
			if got, err := fetch(p, it); err != nil || !bytes.Equal(got, it.File) {
				t.Fatalf("after a kill at %s: %s: %d bytes, %v", point, it.StorePath, len(got), err)
			}
		}
		return p
	}

	for i, point := range []string{"nar-intent", "nar-renamed"} {
		p := armed(point)
		fetch(p, items[i]) // cut short by the kill
		died(p, point)
		before := up.Count(items[i].NARPath)
		restartClean(point, i+1).terminate(t)
		if point == "nar-renamed" && up.Count(items[i].NARPath) != before {
			t.Errorf("a NAR renamed into place before the kill was fetched again: its row was not restored at start")
		}
	}

	// Over its bound from the start, the proxy may reach the point in its
	// first background pass, before it answers: spawn it without waiting,
	// and ask for a pass in case it got that far.
	t.Setenv("NIX_CACHE_PROXY_CRASHPOINT", "evict-rows-deleted")
	p := spawnProxy(t, bin, freeAddr(t), cacheDir, key, []string{up.URL()}, "--max-size", "1KiB")
	t.Setenv("NIX_CACHE_PROXY_CRASHPOINT", "")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Post(p.url+"/_/gc", "application/json", bytes.NewReader([]byte("{}"))); err == nil {
			resp.Body.Close()
			break
		}
		if p.exited() {
			break
		}
	}
	died(p, "evict-rows-deleted")
	restartClean("evict-rows-deleted", 2).terminate(t)

	p = armed("verify-row-dropped")
	name := items[0].FileHash + ".nar"
	file := filepath.Join(cacheDir, "nar", name[:2], name)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, bin, -1, "verify", "--repair", "--server="+p.url) // the server dies under it
	died(p, "verify-row-dropped")
	restartClean("verify-row-dropped", 2).terminate(t)
}
