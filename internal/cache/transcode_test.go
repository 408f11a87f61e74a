package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/ulikunitz/xz"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/recompress"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// zstdEnv is a recompressing cache over a fake upstream.
type zstdEnv struct {
	up    *fakeupstream.Upstream
	st    *store.Store
	c     *Cache
	m     *metrics.Metrics
	files *failingFiles
}

func newZstdEnv(t *testing.T) *zstdEnv { return newZstdEnvGrace(t, time.Millisecond) }

func newZstdEnvGrace(t *testing.T, grace time.Duration) *zstdEnv {
	t.Helper()
	return newZstdEnvOpts(t, Options{RecompressGrace: grace, RecompressQuiet: time.Millisecond})
}

// newZstdEnvOpts is a recompressing cache with opts' Recompress* fields.
func newZstdEnvOpts(t *testing.T, opts Options) *zstdEnv {
	t.Helper()
	return newZstdEnvRoom(t, opts, nil)
}

// newZstdEnvRoom is newZstdEnvOpts with the Room room returns (nil: none).
func newZstdEnvRoom(t *testing.T, opts Options, room func(*store.Store, *metrics.Metrics) Room) *zstdEnv {
	t.Helper()
	up := fakeupstream.New(t)
	client, err := upstream.New(up.URL(), upstream.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dirFiles, err := store.OpenDirFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := &failingFiles{DirFiles: dirFiles} // writes fail only when told
	st, err := store.OpenWith(dir, store.Options{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.Discard()
	var r Room
	if room != nil {
		r = room(st, m)
	}
	c, err := New(Options{Store: st, Upstreams: upstream.NewGroup([]*upstream.Client{client}, 0),
		Keys: []narinfo.PublicKey{up.PublicKey()}, Recompress: true, RecompressGrace: opts.RecompressGrace,
		RecompressQuiet: opts.RecompressQuiet, RecompressMaxDefer: opts.RecompressMaxDefer, Room: r, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		st.Close()
	})
	return &zstdEnv{up: up, st: st, c: c, m: m, files: files}
}

// narinfo returns what the cache serves for hash now.
func (e *zstdEnv) narinfo(t *testing.T, hash string) *narinfo.Info {
	t.Helper()
	text, err := e.c.NarInfo(context.Background(), hash)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// get GETs url ("nar/…") from the cache.
func (e *zstdEnv) get(t *testing.T, url string) []byte {
	t.Helper()
	name := url[len("nar/"):]
	rec := httptest.NewRecorder()
	if err := e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/"+url, nil), name); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	settle(t, e.c)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d", url, rec.Code)
	}
	return rec.Body.Bytes()
}

// unpack is what a client does with a NAR file of ni's Compression.
func unpack(t *testing.T, file []byte, compression string) []byte {
	t.Helper()
	switch compression {
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		nar, err := io.ReadAll(d)
		if err != nil {
			t.Fatal(err)
		}
		return nar
	case "none":
		return file
	}
	t.Fatalf("unpack %s", compression)
	return nil
}

func xzFile(t *testing.T, nar []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(nar)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bzip2File is nar compressed by the bzip2 command (Go has no bzip2
// writer); the test skips without it.
func bzip2File(t *testing.T, nar []byte) []byte {
	t.Helper()
	cmd := exec.Command("bzip2", "-c")
	cmd.Stdin = bytes.NewReader(nar)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("bzip2: %v", err)
	}
	return out
}

// testNAR is a compressible NAR of at least n bytes.
func testNAR(t *testing.T, n int) []byte {
	t.Helper()
	one, err := os.ReadFile("../nardecode/testdata/nar")
	if err != nil {
		t.Fatal(err)
	}
	nar := bytes.Repeat(one, n/len(one)+1)
	return nar
}

func TestRecompress(t *testing.T) {
	nar := testNAR(t, 1<<20)
	small, err := os.ReadFile("../nardecode/testdata/nar")
	if err != nil {
		t.Fatal(err)
	}
	bz2, err := os.ReadFile("../nardecode/testdata/nar.bz2")
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 1<<20) // a compressed or encrypted disk image, say
	rand.Read(random)
	tests := []struct {
		name        string
		compression string
		nar, file   []byte
		recompress  bool
	}{
		{"xz", "xz", nar, xzFile(t, nar), true},
		{"bzip2", "bzip2", nar, bzip2File(t, nar), true},
		{"none", "none", nar, nar, true},
		// The floor holds for every compression: a small NAR unpacks
		// in no time whatever it is.
		{"xz below MinNAR", "xz", small, xzFile(t, small), false},
		{"bzip2 below MinNAR", "bzip2", small, bz2, false},
		{"none below MinNAR", "none", small, small, false},
		{"none incompressible", "none", random, random, false},
		{"zstd stays", "zstd", small, zstdFile(t, small), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newZstdEnv(t)
			sum := sha256.Sum256(tt.nar)
			it := e.up.Add(fakeupstream.Path{File: tt.file, Compression: tt.compression,
				NarHash: sum[:], NarSize: uint64(len(tt.nar))})
			ctx := context.Background()

			// The first client gets the upstream's file as it is.
			before := e.narinfo(t, it.Hash)
			if before.Compression != tt.compression {
				t.Fatalf("first narinfo says %s", before.Compression)
			}
			if got := e.get(t, before.URL); !bytes.Equal(got, tt.file) {
				t.Fatal("first client did not get the upstream's file")
			}
			orig := before.URL[len("nar/"):]
			zname, err := e.c.transcodeShared(ctx, it.Hash, orig, nil)
			if err != nil {
				t.Fatal(err)
			}
			after := e.narinfo(t, it.Hash)
			if !tt.recompress {
				if zname != "" || after.URL != before.URL {
					t.Fatalf("recompressed to %q, narinfo URL %s", zname, after.URL)
				}
				if ok, _ := e.st.HasNAR(ctx, recompress.Name(sum[:])); ok {
					t.Fatal("a zstd file was kept")
				}
				return
			}
			if want := "nar/" + recompress.Name(sum[:]); after.URL != want || after.Compression != "zstd" {
				t.Fatalf("narinfo after: URL %s Compression %s, want %s zstd", after.URL, after.Compression, want)
			}
			// The upstream's signature still holds: it covers none of
			// URL, Compression, FileHash, FileSize.
			if err := narinfo.Verify(after, []narinfo.PublicKey{e.up.PublicKey()}); err != nil {
				t.Fatalf("signature after recompressing: %v", err)
			}
			zfile := e.get(t, after.URL)
			zsum := sha256.Sum256(zfile)
			if after.FileSize != uint64(len(zfile)) || !bytes.Equal(after.FileHash.Digest(), zsum[:]) {
				t.Fatalf("FileSize %d FileHash %s, file is %d bytes", after.FileSize, after.FileHash, len(zfile))
			}
			if !bytes.Equal(unpack(t, zfile, "zstd"), tt.nar) {
				t.Fatal("zstd file does not unpack to the NAR")
			}
			// That hit spared the upstream its own file, not the zstd
			// file's bytes (the first client's was fetched).
			if saved := testutil.ToFloat64(e.m.SavedBytes); saved != float64(len(tt.file)) {
				t.Fatalf("upstream bytes saved = %v after one hit on the zstd file (%d B), want the upstream's file, %d B", saved, len(zfile), len(tt.file))
			}
			// The zstd file is the entry: the original is gone from disk,
			// but a narinfo handed out before still works (refilled).
			waitGone(t, e.st, orig)
			if st := runVerify(t, e.st); !st.Sound() {
				t.Fatalf("verify --deep after the grace: %+v", st)
			}
			if got := e.get(t, before.URL); !bytes.Equal(got, tt.file) {
				t.Fatal("the old narinfo's URL does not serve the original")
			}
			if n := e.up.Count(it.NARPath); n != 2 {
				t.Fatalf("upstream asked %d times for the NAR, want 2 (first fill, old URL refill)", n)
			}
			// And the refilled original goes again after its grace.
			waitGone(t, e.st, orig)
			if got := testutil.ToFloat64(e.m.Recompressed.WithLabelValues("done")); got != 1 {
				t.Fatalf("recompressed done = %v", got)
			}
			if in := testutil.ToFloat64(e.m.RecompressBytes.WithLabelValues("in")); in != float64(len(tt.file)) {
				t.Fatalf("bytes in = %v, want %d", in, len(tt.file))
			}
			// Stats, which the status page reads, count the same.
			st := e.c.Stats()
			if st.Recompressed != 1 || st.RecompressInBytes != int64(len(tt.file)) ||
				float64(st.RecompressOutBytes) != testutil.ToFloat64(e.m.RecompressBytes.WithLabelValues("out")) {
				t.Fatalf("Stats = %+v, want what the metrics say", st)
			}
		})
	}
}

func zstdFile(t *testing.T, nar []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(nar, nil)
}

// A NAR whose file matches FileHash but holds another NAR than NarHash
// says is served as it is (as without recompression) but never kept as
// zstd.
func TestRecompressMismatchNotKept(t *testing.T) {
	e := newZstdEnv(t)
	nar := testNAR(t, 256<<10)
	wrong := sha256.Sum256([]byte("another NAR"))
	it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: wrong[:], NarSize: uint64(len(nar))})
	ctx := context.Background()
	before := e.narinfo(t, it.Hash)
	e.get(t, before.URL)
	_, err := e.c.transcodeShared(ctx, it.Hash, before.URL[len("nar/"):], nil)
	if !errors.Is(err, recompress.ErrMismatch) {
		t.Fatalf("transcode err = %v, want ErrMismatch", err)
	}
	if ok, _ := e.st.HasNAR(ctx, recompress.Name(wrong[:])); ok {
		t.Fatal("a zstd file that is not its NarHash was kept")
	}
	if after := e.narinfo(t, it.Hash); after.URL != before.URL {
		t.Fatalf("narinfo moved to %s", after.URL)
	}
	if got := testutil.ToFloat64(e.m.Recompressed.WithLabelValues("mismatch")); got < 1 {
		t.Fatalf("mismatch count %v", got)
	}
	if st := e.c.Stats(); float64(st.RecompressMismatches) != testutil.ToFloat64(e.m.Recompressed.WithLabelValues("mismatch")) ||
		float64(st.VerifyFailures["hash"]) != testutil.ToFloat64(e.m.VerifyFailures.WithLabelValues("hash")) {
		t.Fatalf("Stats = %+v, want what the metrics say", st)
	}
}

// An evicted zstd file is made again from its original, fetched again.
func TestRecompressRefill(t *testing.T) {
	e := newZstdEnv(t)
	nar := testNAR(t, 256<<10)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	ctx := context.Background()
	before := e.narinfo(t, it.Hash)
	e.get(t, before.URL)
	zname, err := e.c.transcodeShared(ctx, it.Hash, before.URL[len("nar/"):], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EvictNARs(ctx, []string{zname}); err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"GET", "EnsureNAR"} {
		if how == "EnsureNAR" {
			if _, err := e.st.EvictNARs(ctx, []string{zname}); err != nil {
				t.Fatal(err)
			}
			if err := e.c.EnsureNAR(ctx, zname, nil); err != nil {
				t.Fatal(err)
			}
		}
		after := e.narinfo(t, it.Hash)
		if after.URL != "nar/"+zname {
			t.Fatalf("%s: narinfo URL %s", how, after.URL)
		}
		zfile := e.get(t, after.URL)
		zsum := sha256.Sum256(zfile)
		if !bytes.Equal(unpack(t, zfile, "zstd"), nar) || !bytes.Equal(after.FileHash.Digest(), zsum[:]) {
			t.Fatalf("%s: refilled zstd file is not the NAR, or not its FileHash", how)
		}
	}
}

// waitGone waits for the original's eviction after its grace.
func waitGone(t *testing.T, st *store.Store, name string) {
	t.Helper()
	// The row goes first, the file after it (as in an eviction): wait for
	// both, or a verify run in between sees the file as unindexed.
	file := filepath.Join(st.Dir(), "nar", name[:2], name)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ok, err := st.HasNAR(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, statErr := os.Stat(file); !ok && errors.Is(statErr, fs.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("original %s still on disk beside the zstd file", name)
		}
	}
}

// runVerify runs verify --deep over st to its end.
func runVerify(t *testing.T, st *store.Store) verify.Status {
	t.Helper()
	mgr := verify.NewManager(st, verify.Options{})
	defer mgr.Close()
	s, err := mgr.Start(verify.Request{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); s.State == verify.StateRunning; {
		if time.Now().After(deadline) {
			t.Fatalf("verify still running: %+v", s)
		}
		if s, err = mgr.Wait(context.Background(), s.ID, time.Second, 0); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// verify --deep judges the zstd file against its own FileHash and the
// NarHash inside, and the original (in its grace) against its own.
func TestRecompressVerify(t *testing.T) {
	e := newZstdEnvGrace(t, time.Hour)
	nar := testNAR(t, 256<<10)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	before := e.narinfo(t, it.Hash)
	e.get(t, before.URL)
	if _, err := e.c.transcodeShared(context.Background(), it.Hash, before.URL[len("nar/"):], nil); err != nil {
		t.Fatal(err)
	}
	if st := runVerify(t, e.st); !st.Sound() || st.Files != 2 {
		t.Fatalf("verify --deep after recompressing: %+v", st)
	}
}
