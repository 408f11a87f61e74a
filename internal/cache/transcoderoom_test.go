package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// ledgerRoom is a Room that records each reservation, how far it grew and
// whether it was released; it refuses those after the first allow.
type ledgerRoom struct {
	mu    sync.Mutex
	held  []int64 // per reservation, grown
	asked []int64 // per reservation, as asked
	freed []bool
	errs  []error // the write error each was released with
	allow int     // reservations granted before it refuses; <0: all
}

func (r *ledgerRoom) Reserve(_ context.Context, size int64) (func(int64), func(bool, error), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.allow >= 0 && len(r.asked) >= r.allow {
		return nil, nil, evict.ErrNoRoom
	}
	i := len(r.asked)
	r.asked, r.held, r.freed, r.errs = append(r.asked, size), append(r.held, size), append(r.freed, false), append(r.errs, nil)
	grow := func(total int64) {
		r.mu.Lock()
		r.held[i] = max(r.held[i], total)
		r.mu.Unlock()
	}
	release := func(_ bool, writeErr error) {
		r.mu.Lock()
		r.freed[i], r.errs[i] = true, writeErr
		r.mu.Unlock()
	}
	return grow, release, nil
}

// TestRecompressReservesRoom: a recompression holds room for its zstd file
// before writing it, as a download does: as much as the file will take, so
// the bound makes room before the bytes land, even when the zstd file is
// larger than the xz original (text: xz packs it tighter than zstd) or
// than the NAR (random bytes: zstd adds its frame); released when it ends.
// The room once held was the original's size, which the zstd file of a
// text NAR overran by half.
func TestRecompressReservesRoom(t *testing.T) {
	for _, tt := range []struct {
		name string
		nar  []byte
	}{
		{"compressible", testNAR(t, 1<<20)},
		{"text", goSources(t)},
		{"random", fakeupstream.RandomBytes(1 << 20)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			room := &ledgerRoom{allow: -1}
			e := newZstdEnvRoom(t, Options{RecompressGrace: time.Hour, RecompressQuiet: time.Hour, RecompressMaxDefer: time.Hour},
				func(*store.Store, *metrics.Metrics) Room { return room })
			file := xzFile(t, tt.nar)
			sum := sha256.Sum256(tt.nar)
			it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz", NarHash: sum[:], NarSize: uint64(len(tt.nar))})
			before := e.narinfo(t, it.Hash)
			e.get(t, before.URL)
			ctx := context.Background()
			if _, err := e.c.transcodeShared(ctx, it.Hash, before.URL[len("nar/"):], nil); err != nil {
				t.Fatal(err)
			}
			after := e.narinfo(t, it.Hash)
			if after.Compression != "zstd" {
				t.Fatalf("not recompressed: %s", after.URL)
			}
			room.mu.Lock()
			defer room.mu.Unlock()
			// The download's reservation, then the recompression's.
			if len(room.asked) != 2 || room.asked[0] != int64(len(file)) {
				t.Fatalf("reservations %v, want [FileSize %d, the zstd file's room]", room.asked, len(file))
			}
			if room.asked[1] < int64(after.FileSize) {
				t.Errorf("recompression asked room for %d bytes, its zstd file is %d (the xz original %d)", room.asked[1], after.FileSize, len(file))
			}
			if room.held[1] < int64(after.FileSize) {
				t.Errorf("recompression held %d bytes, its zstd file is %d", room.held[1], after.FileSize)
			}
			t.Logf("xz %d B, zstd %d B, room asked %d B, NAR %d B", len(file), after.FileSize, room.asked[1], len(tt.nar))
			if !room.freed[0] || !room.freed[1] {
				t.Errorf("released %v, want both", room.freed)
			}
		})
	}
}

// TestRecompressNoRoom: a recompression the bound has no room for is
// skipped (counted, logged): the NAR stays as it is, its clients are
// served as before.
func TestRecompressNoRoom(t *testing.T) {
	room := &ledgerRoom{allow: 1} // the download's
	e := newZstdEnvRoom(t, Options{RecompressGrace: time.Hour, RecompressQuiet: time.Millisecond},
		func(*store.Store, *metrics.Metrics) Room { return room })
	nar := testNAR(t, 256<<10)
	file := xzFile(t, nar)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	url := e.narinfo(t, it.Hash).URL
	e.get(t, url) // queues the recompression
	for deadline := time.Now().Add(20 * time.Second); testutil.ToFloat64(e.m.Recompressed.WithLabelValues("no-room")) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recompressed no-room = %v", testutil.ToFloat64(e.m.Recompressed.WithLabelValues("no-room")))
		}
	}
	_, err := e.c.transcodeShared(context.Background(), it.Hash, url[len("nar/"):], nil)
	if !errors.Is(err, errNoRoom) {
		t.Errorf("transcode without room: %v, want errNoRoom", err)
	}
	if ni := e.narinfo(t, it.Hash); ni.URL != url || ni.Compression != "xz" {
		t.Errorf("narinfo moved to %s (%s) without room", ni.URL, ni.Compression)
	}
	if got := e.get(t, url); !bytes.Equal(got, file) {
		t.Error("the original is not served as before")
	}
	for _, r := range []string{"done", "error"} {
		if n := testutil.ToFloat64(e.m.Recompressed.WithLabelValues(r)); n != 0 {
			t.Errorf("recompressed %s = %v", r, n)
		}
	}
}

// TestRecompressStaysInBound: with the real eviction, recompressing NARs
// (random bytes, so each zstd file is as large as its original, kept
// beside it for the grace) never takes the NAR files and the index past
// --max-size: each recompression makes room before it writes.
func TestRecompressStaysInBound(t *testing.T) {
	const bound = 5 << 19 // two NARs fit, not with a zstd file beside them
	var ev *evict.Evictor
	e := newZstdEnvRoom(t, Options{RecompressGrace: time.Hour, RecompressQuiet: time.Millisecond},
		func(st *store.Store, m *metrics.Metrics) Room {
			ev = evict.New(st, evict.Config{MaxSize: bound, Interval: time.Hour, PruneAfter: -1, Metrics: m})
			return ev
		})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ev.Run(ctx)
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			total := e.st.NARBytes() + e.st.IndexSize()
			if total > peak.Load() {
				peak.Store(total)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	for range 2 {
		nar := fakeupstream.RandomBytes(1 << 20)
		sum := sha256.Sum256(nar)
		it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
		e.get(t, e.narinfo(t, it.Hash).URL)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.c.queue.mu.Lock()
		idle := !e.c.queue.running && len(e.c.queue.jobs) == 0
		e.c.queue.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("recompressions still queued after 30 s")
		}
	}
	cancel()
	<-sampled
	if n := testutil.ToFloat64(e.m.Recompressed.WithLabelValues("done")); n < 1 {
		t.Fatalf("nothing recompressed (done = %v)", n)
	}
	if p := peak.Load(); p > bound {
		t.Errorf("NAR files + index peaked at %d bytes while recompressing, bound %d", p, bound)
	}
	t.Logf("peak %d of %d bytes; recompressed %v", peak.Load(), bound, testutil.ToFloat64(e.m.Recompressed.WithLabelValues("done")))
}

// TestRecompressWriteFailure: a recompression whose zstd file cannot be
// written (a full disk) releases its room with that error, as a download
// does, so the disk bound hears of it; the NAR stays as it is.
func TestRecompressWriteFailure(t *testing.T) {
	room := &ledgerRoom{allow: -1}
	e := newZstdEnvRoom(t, Options{RecompressGrace: time.Hour, RecompressQuiet: time.Hour, RecompressMaxDefer: time.Hour},
		func(*store.Store, *metrics.Metrics) Room { return room })
	nar := fakeupstream.RandomBytes(256 << 10)
	file := xzFile(t, nar)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	url := e.narinfo(t, it.Hash).URL
	e.get(t, url)
	e.files.failAfter.Store(64 << 10)
	if _, err := e.c.transcodeShared(context.Background(), it.Hash, url[len("nar/"):], nil); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("transcode on a full disk: %v, want ENOSPC", err)
	}
	room.mu.Lock()
	defer room.mu.Unlock()
	if len(room.errs) != 2 || !room.freed[1] || !errors.Is(room.errs[1], syscall.ENOSPC) {
		t.Errorf("recompression's room released %v with %v, want ENOSPC", room.freed, room.errs)
	}
	if ni := e.narinfo(t, it.Hash); ni.URL != url {
		t.Errorf("narinfo moved to %s", ni.URL)
	}
	if n := testutil.ToFloat64(e.m.Recompressed.WithLabelValues("error")); n != 1 {
		t.Errorf("recompressed error = %v, want 1", n)
	}
}

// goSources is this package's Go files one after the other: text, which
// xz packs tighter than zstd does.
func goSources(t *testing.T) []byte {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files here: %v", err)
	}
	var b bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.Bytes()
}
