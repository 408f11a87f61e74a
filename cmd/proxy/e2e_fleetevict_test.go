package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

// TestFleetEviction: three proxies on one bucket; A alone has --max-size
// (1 MiB), B and C only serve. A client gets every narinfo from B; B
// serves p0, C p1 (pinned on C) to p7, 256 KiB each, so the bucket is
// twice its bound. A marks five NARs (never p1, pinned on another proxy);
// C serves one of them during the grace; after the grace A deletes the
// other four, not that one. The sampled bucket size comes back under the
// bound, and the narinfo B handed out for a deleted NAR still works: the
// NAR is refilled from the upstream, the same bytes.
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
	a := start("--max-size", formatSize(maxSize), "--evict-grace", "3s")
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

	// B hands out every narinfo; B serves p0, C (where p1 is pinned) the
	// others, so the bucket holds twice its bound.
	urls := make([]string, len(items))
	byName := map[string]int{}
	for i, it := range items {
		urls[i] = narURL(b, it)
		byName[strings.TrimPrefix(urls[i], "nar/")] = i
	}
	get(b, urls[0], items[0])
	if code := adminPost(http.DefaultClient, c.url+"/_/pins", `{"paths": ["`+items[1].StorePath+`"]}`); code != http.StatusOK {
		t.Fatalf("pin on C: %d", code)
	}
	for i := 1; i < len(items); i++ {
		get(c, narURL(c, items[i]), items[i])
	}
	t.Logf("bucket holds %d bytes, bound %d", bucketBytes(), maxSize)

	// A marks what is least recently served; C serves one of those
	// during its grace.
	var marked []int
	deadline := time.Now().Add(15 * time.Second)
	for len(marked) < 2 {
		// Passes go on as C fills: A marks as the bucket passes its bound.
		body, err := bucket.GetMeta(context.Background(), "evict/pending")
		var pending map[string]json.RawMessage
		marked = nil
		if err == nil && json.Unmarshal(body, &pending) == nil {
			for name := range pending {
				marked = append(marked, byName[name])
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("A marked %v within 15 s (pending: %s, %v)", marked, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(marked)
	t.Logf("A marked %v", marked)
	if slices.Contains(marked, 1) {
		t.Fatalf("A marked %v, with p1, pinned on C", marked)
	}
	served, gone := marked[0], marked[1]
	for range 3 {
		get(c, urls[served], items[served])
	}
	// Deleted after the grace, except the one C served. A pass deletes
	// its NARs one after another: wait for each, not for the first.
	deadline = time.Now().Add(20 * time.Second)
	for _, i := range marked[1:] {
		for inBucket(urls[i]) {
			if time.Now().After(deadline) {
				t.Fatalf("p%d, marked and not served since, is still in the bucket 20 s after it was marked", i)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !inBucket(urls[1]) {
		t.Error("p1, pinned on C, was evicted by A")
	}
	if !inBucket(urls[served]) {
		t.Errorf("p%d, served during its grace, was deleted", served)
	}
	if m := scrape(t, a.url); !strings.Contains(m, "nix_cache_proxy_fleet_evict_cancelled_total 1") ||
		strings.Contains(m, `nix_cache_proxy_evictions_total{reason="size"} 0`) {
		t.Errorf("A's metrics:\n%s", grepLines(m, "evict"))
	}
	// The bound, sampled until it holds.
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

	// The narinfo B handed out still works: the NAR is refilled, the
	// same bytes.
	get(b, urls[gone], items[gone])
	if got := up.Count(items[gone].NARPath); got != 2 {
		t.Errorf("the upstream served p%d's NAR %d times, want 2 (the fill, the refill)", gone, got)
	}
	// The refill is stored once every byte is in and checked, after its
	// client had the last byte.
	for deadline := time.Now().Add(20 * time.Second); !inBucket(urls[gone]); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("p%d was not stored again by its refill", gone)
			break
		}
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
