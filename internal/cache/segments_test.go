package cache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// TestRangeFetch fetches one NAR over a fake upstream that takes ranges,
// or not, or breaks, and checks every byte arrives once it checks out, over
// the number of upstream requests a segmented, resuming fetch should make.
func TestRangeFetch(t *testing.T) {
	const size = 1 << 20 // 4 segments of 256 KiB with Threshold 512 KiB
	tests := []struct {
		name  string
		conns int
		fault fakeupstream.Fault
		// requests to the NAR's path, and to its redirect target
		want, wantRedirected int
		wantErr              error
		once                 bool // the upstream sends each byte once
	}{
		{name: "ranges, 4 connections", conns: 4, fault: fakeupstream.Fault{Ranges: true}, want: 4, once: true},
		{name: "ranges, 1 connection", conns: 1, fault: fakeupstream.Fault{Ranges: true}, want: 1},
		{name: "no ranges", conns: 4, fault: fakeupstream.Fault{}, want: 1},
		{name: "Range ignored, 200", conns: 4, fault: fakeupstream.Fault{IgnoreRange: true}, want: 4},
		// The first range is refused too: asked again whole.
		{name: "wrong Content-Range", conns: 4, fault: fakeupstream.Fault{WrongRange: true}, want: 5},
		{name: "redirect per request", conns: 4, fault: fakeupstream.Fault{Ranges: true, Redirect: true}, want: 1, wantRedirected: 4},
		{name: "dropped in the first segment", conns: 4, fault: fakeupstream.Fault{Ranges: true, CutAt: size/8 + 123}, want: 5},
		{name: "dropped in the last segment", conns: 4, fault: fakeupstream.Fault{Ranges: true, CutAt: size - 1000}, want: 5},
		{name: "dropped, one connection", conns: 1, fault: fakeupstream.Fault{Ranges: true, CutAt: size / 3}, want: 2},
		{name: "stalled, one connection", conns: 1, fault: fakeupstream.Fault{Ranges: true, StallAt: size / 3}, want: 2},
		{name: "stalled in a segment", conns: 4, fault: fakeupstream.Fault{Ranges: true, StallAt: size/2 + 10}, want: 5},
		{name: "dropped, no ranges: fails", conns: 4, fault: fakeupstream.Fault{CutAt: size / 3}, want: 1, wantErr: ErrAborted},
		{name: "wrong bytes in a segment", conns: 4, fault: fakeupstream.Fault{Ranges: true, Corrupt: true}, want: 4, wantErr: ErrAborted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stall := 10 * time.Second
			if tt.fault.StallAt > 0 {
				stall = 300 * time.Millisecond
			}
			e := newFetchEnv(t, stall, FetchOptions{Connections: tt.conns, Threshold: 512 << 10, Backoff: 10 * time.Millisecond})
			file := fakeupstream.RandomBytes(size)
			it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
			e.up.SetFault(it.NARPath, tt.fault)
			rec, err := e.get(t, it)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ServeNAR = %v, want %v", err, tt.wantErr)
				}
				if has, _ := e.st.HasNAR(context.Background(), e.narName(t, it)); has {
					t.Error("a failed fetch was kept")
				}
			} else {
				if err != nil {
					t.Fatalf("ServeNAR: %v", err)
				}
				if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), file) {
					t.Fatalf("got %d, %d bytes, equal %v", rec.Code, rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), file))
				}
				f, err := e.st.OpenNAR(context.Background(), e.narName(t, it))
				if err != nil {
					t.Fatalf("not kept: %v", err)
				}
				f.Close()
			}
			if sent := e.up.Sent(it.NARPath); tt.once && sent != size {
				t.Errorf("upstream sent %d bytes, want the NAR's %d once", sent, size)
			}
			if n := e.up.Count(it.NARPath); n != tt.want {
				t.Errorf("upstream requests: %d, want %d", n, tt.want)
			}
			if n := e.up.Count(fakeupstream.RedirectPrefix + it.NARPath); n != tt.wantRedirected {
				t.Errorf("upstream requests after the redirect: %d, want %d", n, tt.wantRedirected)
			}
		})
	}
}

// TestRangeFetchFollowers: clients that join a segmented fetch mid-way get
// the whole NAR in order, though the segments land out of order.
func TestRangeFetchFollowers(t *testing.T) {
	const size = 2 << 20
	e := newFetchEnv(t, 10*time.Second, FetchOptions{Connections: 4, Threshold: 1 << 20, Backoff: 10 * time.Millisecond})
	file := fakeupstream.RandomBytes(size)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	// The first segment crawls, so the others land first.
	e.up.SetFault(it.NARPath, fakeupstream.Fault{Ranges: true, Chunk: 64 << 10, Delay: time.Millisecond})
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 3)
	for range 3 {
		go func() {
			rec := httptest.NewRecorder()
			if err := e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/nar/"+ent.NARName, nil), ent.NARName); err != nil {
				t.Error(err)
			}
			got <- rec.Body.Bytes()
		}()
	}
	for range 3 {
		if b := <-got; !bytes.Equal(b, file) {
			t.Errorf("a follower got %d bytes, equal %v", len(b), bytes.Equal(b, file))
		}
	}
	if n := e.up.Count(it.NARPath); n != 4 {
		t.Errorf("upstream requests: %d, want 4", n)
	}
}

type fetchEnv struct {
	up    *fakeupstream.Upstream
	st    *store.Store
	c     *Cache
	close func()
}

func newFetchEnv(t *testing.T, stall time.Duration, fetch FetchOptions) *fetchEnv {
	t.Helper()
	return newFetchEnvIn(t, fakeupstream.New(t), t.TempDir(), stall, fetch)
}

// newFetchEnvIn is a cache on dir over up, closed at the end of the test
// (or by the test, to restart it).
func newFetchEnvIn(t *testing.T, up *fakeupstream.Upstream, dir string, stall time.Duration, fetch FetchOptions) *fetchEnv {
	t.Helper()
	client, err := upstream.New(up.URL(), upstream.Options{Timeout: 5 * time.Second, StallTimeout: stall})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Store: st, Upstreams: upstream.NewGroup([]*upstream.Client{client}, 0),
		Keys: []narinfo.PublicKey{up.PublicKey()}, Fetch: fetch})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	e := &fetchEnv{up: up, st: st, c: c}
	e.close = func() {
		once.Do(func() {
			c.Close()
			st.Close()
		})
	}
	t.Cleanup(e.close)
	return e
}

func (e *fetchEnv) get(t *testing.T, it *fakeupstream.Item) (*httptest.ResponseRecorder, error) {
	t.Helper()
	return (&roomEnv{c: e.c}).get(t, it)
}

func (e *fetchEnv) narName(t *testing.T, it *fakeupstream.Item) string {
	t.Helper()
	return (&roomEnv{c: e.c}).narName(t, it)
}
