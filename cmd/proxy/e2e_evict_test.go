package main

import (
	"context"
	"crypto/sha256"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestEvictionRealNix runs the real binary under a bound of two and a half
// "images" and copies three closures through it with real nix: the first
// pinned, each image a newer variant of one --keep-latest rule. The cache
// dir never passes the bound (sampled all along); the pinned closure and
// the newest variant stay; the superseded variant is evicted; a client
// that fetched its narinfo before the eviction still gets identical bytes,
// and nix copies that closure again whole.
func TestEvictionRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	const image = 8 << 20
	const bound = 20 << 20
	c1, cache := nixtest.BuildClosure(t, image)
	c2, _ := nixtest.BuildClosure(t, image)
	nixtest.AddToCache(t, cache, c2)
	c3, _ := nixtest.BuildClosure(t, image)
	nixtest.AddToCache(t, cache, c3)
	upstream, _ := nixtest.ServeDir(t, cache.Dir)

	cacheDir := t.TempDir()
	// --min-free 0: the bound alone, whatever this machine's free space.
	p := startProxyArgs(t, bin, cacheDir, cache.PublicKey, []string{upstream},
		"--max-size", "20MiB", "--min-free", "0", "--keep-latest", "nixtest-image=1", "--pin", c1.Root)
	peak := sampleCacheDir(t, cacheDir)

	copyThrough(t, "1 (pinned)", p.url, cache.PublicKey, c1)
	copyThrough(t, "2", p.url, cache.PublicKey, c2)
	// A client holds image 2's narinfo (Nix keeps it for 30 days)...
	nar2 := narURL(t, p.url, c2.Image)
	want := getSum(t, upstreamNARURL(t, upstream, c2.Image))
	// ...while image 3 pushes image 2 out.
	copyThrough(t, "3", p.url, cache.PublicKey, c3)

	if onDisk(t, cacheDir, nar2) {
		t.Errorf("image 2, superseded and least recently used, is still on disk")
	}
	for _, c := range []struct {
		what string
		path string
	}{{"pinned image 1", c1.Image}, {"newest image 3", c3.Image}} {
		if !onDisk(t, cacheDir, narURL(t, p.url, c.path)) {
			t.Errorf("%s was evicted", c.what)
		}
	}
	if got := getSum(t, p.url+"/"+nar2); got != want {
		t.Errorf("image 2's NAR after its eviction: sha256 %x, want the upstream's %x", got, want)
	}
	copyThrough(t, "2 again, after its eviction", p.url, cache.PublicKey, c2)

	if got := peak(); got > bound {
		t.Errorf("cache dir peaked at %d bytes, over the %d bound", got, bound)
	} else {
		t.Logf("cache dir peaked at %.1f MiB of the %d MiB bound", float64(got)/(1<<20), bound>>20)
	}
	metrics := string(mustRead(t, must(http.Get(p.url+"/metrics"))))
	for _, want := range []string{`nix_cache_proxy_evictions_total{reason="size"}`, "nix_cache_proxy_store_max_size_bytes 2.097152e+07"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, `nix_cache_proxy_evictions_total{reason="size"} 0`) {
		t.Error("no eviction counted")
	}
	p.terminate(t)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// sampleCacheDir measures what the cache dir holds (NAR files, temp files
// and the index) every 10 ms until t ends, and returns a func reading the
// peak so far.
func sampleCacheDir(t *testing.T, dir string) func() int64 {
	var peak atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var n int64
			filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if info, err := d.Info(); err == nil {
						n += info.Size()
					}
				}
				return nil
			})
			if n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return peak.Load
}

// narURL is the URL path ("nar/<name>") of storePath's NAR in the
// narinfo the proxy serves.
func narURL(t *testing.T, base, storePath string) string {
	t.Helper()
	ni, err := narinfo.Parse(mustRead(t, must(http.Get(base+"/"+narinfo.HashOfStorePath(storePath)+".narinfo"))))
	if err != nil {
		t.Fatal(err)
	}
	return ni.URL
}

// upstreamNARURL is the upstream's URL of storePath's NAR.
func upstreamNARURL(t *testing.T, upstream, storePath string) string {
	return upstream + "/" + narURL(t, upstream, storePath)
}

func onDisk(t *testing.T, cacheDir, url string) bool {
	t.Helper()
	name := strings.TrimPrefix(url, "nar/")
	_, err := os.Stat(filepath.Join(cacheDir, "nar", name[:2], name))
	return err == nil
}

func getSum(t *testing.T, url string) [32]byte {
	t.Helper()
	body := mustRead(t, must(http.Get(url)))
	if len(body) == 0 {
		t.Fatalf("GET %s: empty", url)
	}
	return sha256.Sum256(body)
}
