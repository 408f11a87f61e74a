package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

// TestFleetEviction: three proxies on one bucket; A alone has --max-size
// (1 MiB), B and C only serve. A client gets p0's narinfo from B and its
// NAR; C then serves p1 (pinned on C) to p7, 256 KiB each, so the bucket
// is twice its bound. A marks the least recently served across the fleet
// (never p1, pinned on another proxy), C serves p2 during the grace, and
// after the grace A deletes the rest of what it marked, but not p2. The
// sampled bucket size comes back under the bound, and the client's old
// narinfo from B still works: the NAR is refilled from the upstream, the
// same bytes.
func TestFleetEviction(t *testing.T) {
	bin := e2eBinary(t, false)
	srv := s3test.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	storage := srv.URL(srv.Bucket(t), "fleet")
	loc, err := s3store.ParseURL(storage)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := s3store.Open(context.Background(), loc, s3store.Options{SpoolDir: filepath.Join(t.TempDir(), "spool"), Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	up := fakeupstream.New(t)
	var items []*fakeupstream.Item
	for i := range 8 {
		items = append(items, up.Add(fakeupstream.Path{Name: fmt.Sprintf("p%d", i), File: fakeupstream.RandomBytes(256 << 10), Compression: "none"}))
	}
	pub := up.PublicKey().String()
	const maxSize = 1 << 20
	fleetFlags := []string{"--storage", storage, "--fill-lease-ttl", "1s", "--fleet-interval", "300ms"}
	start := func(extra ...string) *proxyProcess {
		return startProxyAt(t, bin, freeAddr(t), t.TempDir(), pub, []string{up.URL()}, append(fleetFlags, extra...)...)
	}
	a := start("--max-size", fmt.Sprint(maxSize), "--evict-grace", "3s")
	b, c := start(), start()

	narURL := func(p *proxyProcess, it *fakeupstream.Item) string {
		t.Helper()
		resp, err := http.Get(p.url + "/" + it.Hash + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("narinfo of %s from %s: %s", it.StorePath, p.url, resp.Status)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if u, ok := strings.CutPrefix(line, "URL: "); ok {
				return u
			}
		}
		t.Fatalf("narinfo without URL: %s", body)
		return ""
	}
	get := func(p *proxyProcess, url string, it *fakeupstream.Item) {
		t.Helper()
		resp, err := http.Get(p.url + "/" + url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, it.File) {
			t.Fatalf("GET %s from %s: %s, %d bytes, same as the upstream's: %v, %v", url, p.url, resp.Status, len(body), bytes.Equal(body, it.File), err)
		}
	}
	inBucket := func(url string) bool {
		_, err := bucket.StatNARObject(context.Background(), strings.TrimPrefix(url, "nar/"))
		return err == nil
	}
	bucketBytes := func() int64 {
		var n int64
		if err := bucket.ListNARObjects(context.Background(), func(o s3store.NARObject) error { n += o.Size; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	urls := make([]string, len(items))
	urls[0] = narURL(b, items[0]) // the narinfo B hands out
	get(b, urls[0], items[0])
	if code := adminPost(http.DefaultClient, c.url+"/_/pins", `{"paths": ["`+items[1].StorePath+`"]}`); code != http.StatusOK {
		t.Fatalf("pin on C: %d", code)
	}
	for i := 1; i < len(items); i++ {
		urls[i] = narURL(c, items[i])
		get(c, urls[i], items[i])
	}
	t.Logf("bucket holds %d bytes, bound %d", bucketBytes(), maxSize)

	// Wait for A to mark p2, then serve it from C during its grace.
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, err := bucket.GetMeta(context.Background(), "evict/pending")
		if err == nil && strings.Contains(string(body), strings.TrimPrefix(urls[2], "nar/")) {
			if strings.Contains(string(body), strings.TrimPrefix(urls[1], "nar/")) {
				t.Fatalf("A marked p1, pinned on C: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A did not mark p2 within 15 s (pending: %s, %v)", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 3 {
		get(c, urls[2], items[2])
	}
	// Deleted after the grace: p0, the least recently served.
	for deadline := time.Now().Add(20 * time.Second); inBucket(urls[0]); {
		if time.Now().After(deadline) {
			t.Fatal("p0 still in the bucket 20 s after the marking")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !inBucket(urls[1]) {
		t.Error("p1, pinned on C, was evicted by A")
	}
	if !inBucket(urls[2]) {
		t.Error("p2, served during its grace, was deleted")
	}
	if m := scrape(t, a.url); !strings.Contains(m, "nix_cache_proxy_fleet_evict_cancelled_total 1") {
		t.Errorf("A's metrics:\n%s", grepLines(m, "fleet_evict"))
	}
	// The bound, sampled until it holds (what p2's cancel left over goes
	// one grace later).
	var n int64
	for deadline := time.Now().Add(20 * time.Second); ; {
		if n = bucketBytes(); n <= maxSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket still holds %d bytes, bound %d", n, maxSize)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("bucket within its bound: %d bytes", n)

	// The narinfo B handed out still works: the NAR is refilled.
	get(b, urls[0], items[0])
	if got := up.Count(items[0].NARPath); got != 2 {
		t.Errorf("the upstream served p0's NAR %d times, want 2 (the fill, the refill)", got)
	}
	if !inBucket(urls[0]) {
		t.Error("p0 was not stored again by its refill")
	}
	// Only A evicts; B and C never tried the lease.
	for name, p := range map[string]*proxyProcess{"A": a, "B": b, "C": c} {
		m := scrape(t, p.url)
		ran := !strings.Contains(m, `nix_cache_proxy_fleet_evict_passes_total{result="run"} 0`)
		if ran != (name == "A") {
			t.Errorf("%s ran eviction passes: %v\n%s", name, ran, grepLines(m, "fleet_evict"))
		}
	}
}
