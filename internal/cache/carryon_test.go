package cache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// firstWrite is a ResponseRecorder that closes got at its first body bytes.
type firstWrite struct {
	*httptest.ResponseRecorder
	once sync.Once
	got  chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if len(p) > 0 {
		w.once.Do(func() { close(w.got) })
	}
	return w.ResponseRecorder.Write(p)
}

// holdUntil is a Fault.Hold that waits for ch (bounded, so a broken test
// ends).
func holdUntil(ch <-chan struct{}) func() {
	return func() {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
		}
	}
}

// getHeld GETs it's NAR with a client that has had bytes from the part
// file before the download goes on past the upstream's hold.
func getHeld(t *testing.T, e *roomEnv, it *fakeupstream.Item, ranges bool, holdAt int) (*firstWrite, error) {
	t.Helper()
	rec := &firstWrite{ResponseRecorder: httptest.NewRecorder(), got: make(chan struct{})}
	e.up.SetFault(it.NARPath, fakeupstream.Fault{Ranges: ranges, HoldAt: holdAt, Hold: holdUntil(rec.got)})
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	err = e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/nar/"+ent.NARName, nil), ent.NARName)
	return rec, err
}

// TestDiskFullCarriesOn: writing to the cache dir fails midway (injected
// ENOSPC) while a client is streaming the part file: the client is not
// cut, it gets the rest from the upstream with a Range request, every
// byte right and the whole checked; nothing is kept. An upstream that does
// not do ranges aborts the client, as before.
func TestDiskFullCarriesOn(t *testing.T) {
	for _, tt := range []struct {
		name   string
		ranges bool
	}{{"ranges", true}, {"no ranges", false}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newRoomEnv(t, t.TempDir(), func(st *store.Store, m *metrics.Metrics) Room {
				return evict.New(st, evict.Config{Metrics: m})
			})
			e.files.failAfter.Store(1 << 20)
			file := fakeupstream.RandomBytes(4<<20 + 3)
			it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
			rec, err := getHeld(t, e, it, tt.ranges, 256<<10)
			select {
			case <-rec.got:
			default:
				t.Fatal("the client had no bytes before the write failed")
			}
			if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); has {
				t.Error("a NAR whose write failed was kept")
			}
			if !tt.ranges {
				if !errors.Is(err, ErrAborted) || rec.Body.Len() >= len(file) {
					t.Fatalf("without ranges: %v after %d of %d bytes, want aborted", err, rec.Body.Len(), len(file))
				}
				return
			}
			if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
				t.Fatalf("GET: %v, %d, %d of %d bytes (right: %v)", err, rec.Code, rec.Body.Len(), len(file), bytes.Equal(rec.Body.Bytes(), file))
			}
			if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(file)) {
				t.Errorf("Content-Length %q", cl)
			}
			if n := e.up.Count(it.NARPath); n != 2 {
				t.Errorf("upstream NAR requests = %d, want 2 (the download, then the range)", n)
			}
		})
	}
}

// TestDiskFullCarriesOnCorrupt: the rest from the upstream is checked with
// the bytes already sent: a wrong one cuts the client before its last byte.
func TestDiskFullCarriesOnCorrupt(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), func(st *store.Store, m *metrics.Metrics) Room {
		return evict.New(st, evict.Config{Metrics: m})
	})
	e.files.failAfter.Store(1 << 20)
	file := fakeupstream.RandomBytes(4 << 20)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	// The range the client carries on with comes from a corrupt copy.
	bad := append([]byte(nil), file...)
	bad[3<<20] ^= 1
	rec := &firstWrite{ResponseRecorder: httptest.NewRecorder(), got: make(chan struct{})}
	e.up.SetFault(it.NARPath, fakeupstream.Fault{Ranges: true, HoldAt: 256 << 10, Hold: func() {
		holdUntil(rec.got)()
		e.up.SetFile(it.NARPath, bad)
	}})
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	err = e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/nar/"+ent.NARName, nil), ent.NARName)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrVerify) || rec.Body.Len() >= len(file) {
		t.Fatalf("corrupt rest: %v after %d of %d bytes, want aborted by the check", err, rec.Body.Len(), len(file))
	}
}

// TestDiskFullTmpfsCarriesOn is TestDiskFullCarriesOn on a real full file
// system: a 20 MiB tmpfs and a 30 MiB NAR. It needs root (mount).
func TestDiskFullTmpfsCarriesOn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs; TestDiskFullCarriesOn injects the error instead")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs refused (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	e := newRoomEnv(t, dir, func(st *store.Store, m *metrics.Metrics) Room {
		return evict.New(st, evict.Config{Metrics: m}) // no --min-free: the write itself hits ENOSPC
	})
	file := fakeupstream.RandomBytes(30 << 20)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	rec, err := getHeld(t, e, it, true, 1<<20)
	if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
		t.Fatalf("GET: %v, %d, %d of %d bytes", err, rec.Code, rec.Body.Len(), len(file))
	}
	if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); has {
		t.Fatal("a NAR larger than the disk was indexed")
	}
	if n := e.up.Count(it.NARPath); n != 2 {
		t.Errorf("upstream NAR requests = %d, want 2 (the download, then the range)", n)
	}
}
