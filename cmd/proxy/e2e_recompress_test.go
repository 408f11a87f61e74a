package main

import (
	"bytes"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/recompress"
)

// TestEndToEndRecompress copies a closure whose small paths the upstream
// (real nix, compression=xz) holds as xz through the proxy: the first copy
// gets the xz files, the proxy recompresses them, the narinfos then name
// zstd files, a second copy with real nix unpacks those, and the narinfo a
// client got before still names a file that is served.
func TestEndToEndRecompress(t *testing.T) {
	bin := e2eBinary(t, true)
	c, cache := nixtest.BuildClosure(t, 1<<20)
	upstream, _ := nixtest.ServeDir(t, cache.Dir)
	dir := t.TempDir()
	p := startProxyArgs(t, bin, dir, cache.PublicKey, []string{upstream}, "--recompress", "zstd")

	// Before: every narinfo as the proxy hands it out the first time.
	before := make(map[string]*narinfo.Info)
	for _, sp := range c.Paths {
		hash := path.Base(sp)[:32]
		before[hash] = getNarInfo(t, p.url, hash)
	}
	copyThrough(t, "first client", p.url, cache.PublicKey, c)

	xz, small := 0, 0
	for hash, ni := range before {
		if ni.Compression != "xz" || ni.NarSize < recompress.MinNAR {
			continue
		}
		xz++
		after := waitZstd(t, p.url, hash)
		if after.NarHash.String() != ni.NarHash.String() || !bytes.Equal(after.FileHash.Digest(), sumOf(getSum(t, p.url+"/"+after.URL))) {
			t.Fatalf("%s: recompressed narinfo does not describe its file", hash)
		}
		// The narinfo handed out before still works: its URL serves the
		// file its FileHash names.
		if !bytes.Equal(ni.FileHash.Digest(), sumOf(getSum(t, p.url+"/"+ni.URL))) {
			t.Fatalf("%s: the old narinfo's %s is not the file it names", hash, ni.URL)
		}
	}
	if xz == 0 {
		t.Fatal("no xz path of 64 KiB or more in the closure: nothing was recompressed")
	}
	// The small ones stay as they are, whatever their compression.
	for hash, ni := range before {
		if ni.Compression == "xz" && ni.NarSize < recompress.MinNAR {
			small++
			if after := getNarInfo(t, p.url, hash); after.Compression != "xz" || after.URL != ni.URL {
				t.Errorf("%s: a %d-byte xz NAR became %s %s: below recompress.MinNAR nothing is recompressed", hash, ni.NarSize, after.Compression, after.URL)
			}
		}
	}
	if small == 0 {
		t.Error("no small xz path in the closure: the floor went untested")
	}
	copyThrough(t, "after recompression", p.url, cache.PublicKey, c)
	body := mustRead(t, must(http.Get(p.url+"/metrics")))
	if !bytes.Contains(body, []byte(`nix_cache_proxy_recompressed_nars_total{result="done"}`)) {
		t.Fatalf("no recompressed_nars_total in /metrics")
	}

	// Every zstd file and original gone from disk (as after eviction):
	// real nix copies again, each zstd file rebuilt from its original
	// fetched again, to the bytes the narinfo's FileHash names.
	p.terminate(t)
	zstd := make(map[string]*narinfo.Info)
	for hash, ni := range before {
		if ni.Compression == "xz" && ni.NarSize >= recompress.MinNAR {
			zstd[hash] = nil
		}
	}
	removed := 0
	if err := filepath.WalkDir(filepath.Join(dir, "nar"), func(f string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(f, ".nar.zst") || strings.HasSuffix(f, ".nar.xz")) {
			removed++
			return os.Remove(f)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if removed < 2*xz {
		t.Fatalf("removed %d files, want the %d zstd files and their originals", removed, xz)
	}
	p = startProxyArgs(t, bin, dir, cache.PublicKey, []string{upstream}, "--recompress", "zstd")
	defer p.terminate(t)
	for hash := range zstd {
		zstd[hash] = getNarInfo(t, p.url, hash)
	}
	copyThrough(t, "zstd files and originals evicted", p.url, cache.PublicKey, c)
	for hash, ni := range zstd {
		if ni.Compression != "zstd" || !bytes.Equal(ni.FileHash.Digest(), sumOf(getSum(t, p.url+"/"+ni.URL))) {
			t.Fatalf("%s: rebuilt %s is not the file its narinfo names", hash, ni.URL)
		}
	}
}

func sumOf(s [32]byte) []byte { return s[:] }

func getNarInfo(t *testing.T, base, hash string) *narinfo.Info {
	t.Helper()
	ni, err := narinfo.Parse(mustRead(t, must(http.Get(base+"/"+hash+".narinfo"))))
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// waitZstd waits until the proxy's narinfo for hash names a zstd file.
func waitZstd(t *testing.T, base, hash string) *narinfo.Info {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ni := getNarInfo(t, base, hash)
		if ni.Compression == "zstd" {
			return ni
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 2 minutes", hash, ni.Compression)
		}
	}
}
