package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// roomEnv is a cache over a fake upstream with a Room the test chooses.
type roomEnv struct {
	up    *fakeupstream.Upstream
	st    *store.Store
	c     *Cache
	m     *metrics.Metrics
	files *failingFiles
}

func newRoomEnv(t *testing.T, dir string, room func(*store.Store, *metrics.Metrics) Room) *roomEnv {
	t.Helper()
	up := fakeupstream.New(t)
	client, err := upstream.New(up.URL(), upstream.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dirFiles, err := store.OpenDirFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := &failingFiles{DirFiles: dirFiles}
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
		Keys: []narinfo.PublicKey{up.PublicKey()}, Room: r, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		st.Close()
	})
	return &roomEnv{up: up, st: st, c: c, m: m, files: files}
}

// get asks the cache for the narinfo of it, then GETs its NAR.
func (e *roomEnv) get(t *testing.T, it *fakeupstream.Item) (*httptest.ResponseRecorder, error) {
	t.Helper()
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/nar/"+ent.NARName, nil)
	err = e.c.ServeNAR(rec, req, ent.NARName)
	settle(t, e.c)
	return rec, err
}

func (e *roomEnv) narName(t *testing.T, it *fakeupstream.Item) string {
	t.Helper()
	ent, err := e.c.LocalEntry(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	return ent.NARName
}

// failingFiles fails writes once failAfter bytes went to one file, as a
// full disk does, when failAfter > 0.
type failingFiles struct {
	*store.DirFiles
	failAfter atomic.Int64
	// commitGate, when set, holds each part's Commit until it is closed.
	commitGate chan struct{}
}

func (f *failingFiles) Create(name string) (store.PartFile, error) {
	p, err := f.DirFiles.Create(name)
	if err != nil {
		return nil, err
	}
	return &failingPart{PartFile: p, limit: f.failAfter.Load(), gate: f.commitGate}, nil
}

type failingPart struct {
	store.PartFile
	limit, n int64
	gate     chan struct{}
}

func (p *failingPart) Commit() (int64, error) {
	if p.gate != nil {
		<-p.gate
	}
	return p.PartFile.Commit()
}

func (p *failingPart) Write(b []byte) (int, error) {
	if p.limit > 0 && p.n+int64(len(b)) > p.limit {
		return 0, fmt.Errorf("write: %w", syscall.ENOSPC)
	}
	p.n += int64(len(b))
	return p.PartFile.Write(b)
}

type refuseRoom struct{}

func (refuseRoom) Reserve(context.Context, int64) (func(int64), func(bool, error), error) {
	return nil, nil, evict.ErrNoRoom
}

// TestNARNotKeptWhenNoRoom: a NAR the bound has no room for is streamed to
// its client, byte for byte, and nothing of it stays.
func TestNARNotKeptWhenNoRoom(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), func(*store.Store, *metrics.Metrics) Room { return refuseRoom{} })
	file := fakeupstream.RandomBytes(3<<20 + 7)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	for range 2 {
		rec, err := e.get(t, it)
		if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
			t.Fatalf("GET: %v, %d, %d bytes", err, rec.Code, rec.Body.Len())
		}
	}
	if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); has {
		t.Error("a NAR with no room was kept")
	}
	if n := testutil.ToFloat64(e.m.NARNotKept.WithLabelValues("no-room")); n != 2 {
		t.Errorf("nar_not_kept_total{no-room} = %v, want 2", n)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.st.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
}

// TestNARNotKeptCorruptIsCut: streaming without keeping still checks the
// bytes: a corrupt body is cut short, never completed with a 200.
func TestNARNotKeptCorruptIsCut(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), func(*store.Store, *metrics.Metrics) Room { return refuseRoom{} })
	it := e.up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1 << 20), Compression: "xz"})
	e.up.SetFault(it.NARPath, fakeupstream.Fault{Corrupt: true})
	rec, err := e.get(t, it)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrVerify) {
		t.Fatalf("GET of a corrupt NAR: %v, want ErrAborted and ErrVerify", err)
	}
	if rec.Body.Len() >= len(it.File) {
		t.Errorf("all %d bytes sent", rec.Body.Len())
	}
}

// TestDiskFullStreamsThenResumes: a write to the temp file fails (a full
// disk): the client gets a clean abort or the right bytes, nothing
// half-written is indexed, the next client gets the NAR straight from the
// upstream, /readyz (Ready) says so, and once writes work again NARs are
// kept again.
func TestDiskFullStreamsThenResumes(t *testing.T) {
	var ev *evict.Evictor
	e := newRoomEnv(t, t.TempDir(), func(st *store.Store, m *metrics.Metrics) Room {
		ev = evict.New(st, evict.Config{Metrics: m})
		return ev
	})
	e.files.failAfter.Store(1 << 20)
	file := fakeupstream.RandomBytes(4 << 20)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	rec, err := e.get(t, it)
	switch {
	case err == nil:
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
			t.Fatalf("first GET: 200 with wrong bytes (%d of %d)", rec.Body.Len(), len(file))
		}
	case errors.Is(err, ErrAborted):
		if rec.Body.Len() >= len(file) {
			t.Fatalf("aborted after all %d bytes", rec.Body.Len())
		}
	default:
		t.Fatalf("first GET: %v", err)
	}
	name := e.narName(t, it)
	if has, _ := e.st.HasNAR(context.Background(), name); has {
		t.Fatal("a half-written NAR was indexed")
	}
	if n := testutil.ToFloat64(e.m.NARNotKept.WithLabelValues("disk-error")); n != 1 {
		t.Errorf("nar_not_kept_total{disk-error} = %v, want 1", n)
	}
	if err := ev.Ready(); err == nil {
		t.Error("Ready: nil while writes fail")
	}
	// The next client: straight from the upstream, whole.
	rec, err = e.get(t, it)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("second GET: %v, %d bytes", err, rec.Body.Len())
	}
	if has, _ := e.st.HasNAR(context.Background(), name); has {
		t.Fatal("kept while writes were failing")
	}
	// Space returns (and the retry wait has passed): kept again.
	e.files.failAfter.Store(0)
	ev.ForgetDiskError()
	rec, err = e.get(t, it)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("third GET: %v, %d bytes", err, rec.Body.Len())
	}
	if has, _ := e.st.HasNAR(context.Background(), name); !has {
		t.Error("not kept once writes work again")
	}
	if err := ev.Ready(); err != nil {
		t.Errorf("Ready after a NAR was kept: %v", err)
	}
}

// TestDiskFullTmpfs is TestDiskFullStreamsThenResumes on a real full file
// system: a 20 MiB tmpfs and a 30 MiB NAR. It needs root (mount).
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs; TestDiskFullStreamsThenResumes injects the error instead")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs refused (%v: %s); TestDiskFullStreamsThenResumes injects the error instead", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	var ev *evict.Evictor
	e := newRoomEnv(t, dir, func(st *store.Store, m *metrics.Metrics) Room {
		// No --min-free: the write itself must hit ENOSPC.
		ev = evict.New(st, evict.Config{Metrics: m})
		return ev
	})
	file := fakeupstream.RandomBytes(30 << 20)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	rec, err := e.get(t, it)
	if err == nil && !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("first GET: 200 with wrong bytes (%d of %d)", rec.Body.Len(), len(file))
	}
	if err != nil && !errors.Is(err, ErrAborted) {
		t.Fatalf("first GET: %v", err)
	}
	if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); has {
		t.Fatal("a NAR larger than the disk was indexed")
	}
	if ev.Ready() == nil {
		t.Error("Ready: nil after ENOSPC")
	}
	rec, err = e.get(t, it)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("second GET: %v, %d of %d bytes", err, rec.Body.Len(), len(file))
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("temp files left on the full disk: %v", tmp)
	}
	// A small NAR fits once the big one's temp file is gone.
	small := e.up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1 << 20), Compression: "xz"})
	ev.ForgetDiskError()
	if rec, err := e.get(t, small); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("small GET: %v", err)
	}
	if has, _ := e.st.HasNAR(context.Background(), e.narName(t, small)); !has {
		t.Error("caching did not resume when space returned")
	}
}

// TestEvictedAfterNarInfoIsRefilled: a client that got a narinfo before
// its NAR was evicted gets identical bytes, fetched again.
func TestEvictedAfterNarInfoIsRefilled(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), nil)
	file := fakeupstream.RandomBytes(1<<20 + 5)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	if rec, err := e.get(t, it); err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("GET: %v", err)
	}
	name := e.narName(t, it)
	if freed, err := e.st.EvictNARs(context.Background(), []string{name}); err != nil || freed != int64(len(file)) {
		t.Fatalf("EvictNARs = %d, %v", freed, err)
	}
	rec, err := e.get(t, it)
	if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("GET after eviction: %v, %d, %d bytes", err, rec.Code, rec.Body.Len())
	}
	if n := e.up.Count(it.NARPath); n != 2 {
		t.Errorf("upstream NAR requests = %d, want 2 (one refill)", n)
	}
}

// TestFollowGoneAfterDownload is the regression test for a NAR evicted
// between its download ending and a follower opening it: that was a 500;
// now follow says errGone and ServeNAR fetches it again.
func TestFollowGoneAfterDownload(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), nil)
	file := fakeupstream.RandomBytes(64 << 10)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	if _, err := e.get(t, it); err != nil {
		t.Fatal(err)
	}
	name := e.narName(t, it)
	src, err := e.st.NARSource(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	// A flight that finds the NAR stored, which is evicted before the
	// follower opens it.
	fl := e.c.join(context.Background(), name, src)
	if last, err := fl.watch(context.Background(), nil); err != nil || last.err != nil {
		t.Fatal(err, last.err)
	}
	if _, err := e.st.EvictNARs(context.Background(), []string{name}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	err = e.c.serveFlight(rec, httptest.NewRequest(http.MethodGet, "/nar/"+name, nil), fl, src)
	e.c.leave(fl)
	if !errors.Is(err, errGone) {
		t.Fatalf("follow of an evicted NAR: %v, want errGone", err)
	}
	if rec.Body.Len() != 0 || rec.Code != http.StatusOK && rec.Code != 0 {
		t.Errorf("follow wrote %d %q before errGone", rec.Code, rec.Body)
	}
	rec2, err := e.get(t, it)
	if err != nil || !bytes.Equal(rec2.Body.Bytes(), file) {
		t.Fatalf("GET after: %v", err)
	}
}

// recordRoom is a Room that keeps everything and records what it was asked
// to hold.
type recordRoom struct {
	mu       sync.Mutex
	reserved []int64
	held     int64 // the last reservation's size, grown
}

func (r *recordRoom) Reserve(_ context.Context, size int64) (func(int64), func(bool, error), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reserved = append(r.reserved, size)
	r.held = size
	grow := func(total int64) {
		r.mu.Lock()
		r.held = max(r.held, total)
		r.mu.Unlock()
	}
	return grow, func(bool, error) {}, nil
}

// TestReserveWithoutFileSize: a download whose narinfo gives no FileSize
// holds its NarSize, and more if the bytes turn out to be more (with or
// without a Content-Length).
func TestReserveWithoutFileSize(t *testing.T) {
	for _, tt := range []struct {
		name      string
		narSize   uint64
		omitSize  bool
		chunked   bool
		want      int64 // reserved before the download
		wantGrown int64 // held at its end
	}{
		{"FileSize", 8 << 20, false, false, 1 << 20, 1 << 20},
		{"NarSize", 8 << 20, true, false, 8 << 20, 8 << 20},
		{"larger than NarSize", 1000, true, false, 1000, 1 << 20},
		{"larger than NarSize, chunked", 1000, true, true, 1000, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			room := &recordRoom{}
			e := newRoomEnv(t, t.TempDir(), func(*store.Store, *metrics.Metrics) Room { return room })
			file := fakeupstream.RandomBytes(1 << 20)
			it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz", OmitFileSize: tt.omitSize,
				NarHash: make([]byte, 32), NarSize: tt.narSize})
			e.up.SetFault(it.NARPath, fakeupstream.Fault{Chunked: tt.chunked})
			if rec, err := e.get(t, it); err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
				t.Fatalf("GET: %v", err)
			}
			room.mu.Lock()
			defer room.mu.Unlock()
			if len(room.reserved) != 1 || room.reserved[0] != tt.want {
				t.Errorf("reserved %v, want [%d]", room.reserved, tt.want)
			}
			if room.held != tt.wantGrown {
				t.Errorf("held %d at the end, want %d", room.held, tt.wantGrown)
			}
			if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); !has {
				t.Error("not kept")
			}
		})
	}
}

// TestUnknownSizeStaysInBound: a NAR whose narinfo has no FileSize does not
// push the cache past --max-size: its NarSize is made room for before the
// download starts.
func TestUnknownSizeStaysInBound(t *testing.T) {
	const max = 5 << 20
	var ev *evict.Evictor
	e := newRoomEnv(t, t.TempDir(), func(st *store.Store, m *metrics.Metrics) Room {
		ev = evict.New(st, evict.Config{MaxSize: max, Interval: time.Hour, Metrics: m})
		return ev
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ev.Run(ctx)
	for range 3 {
		it := e.up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1 << 20), Compression: "xz"})
		if _, err := e.get(t, it); err != nil {
			t.Fatal(err)
		}
	}
	file := fakeupstream.RandomBytes(2 << 20)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz", OmitFileSize: true,
		NarHash: make([]byte, 32), NarSize: 2 << 20})
	if rec, err := e.get(t, it); err != nil || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("GET: %v", err)
	}
	if has, _ := e.st.HasNAR(ctx, e.narName(t, it)); !has {
		t.Fatal("not kept")
	}
	if total := e.st.NARBytes() + e.st.IndexSize(); total > max {
		t.Errorf("NAR files + index = %d after a download without FileSize, bound %d", total, max)
	}
}
