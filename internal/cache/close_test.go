package cache

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// lookupLog collects the "upstream narinfo" lines, which a lookup logs as
// its last act.
type lookupLog struct {
	slog.Handler
	mu    sync.Mutex
	lines int
}

func (l *lookupLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *lookupLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "upstream narinfo" {
		l.mu.Lock()
		l.lines++
		l.mu.Unlock()
	}
	return nil
}

func (l *lookupLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines
}

// TestCloseEndsDetachedLookup: a shared narinfo lookup runs on after the
// client that started it left. Close must end it and wait for it: it used
// to run on after Close, into the closed index and miss log.
func TestCloseEndsDetachedLookup(t *testing.T) {
	fu := fakeupstream.New(t)
	it := fu.Add(fakeupstream.Path{File: []byte("nar")})
	reached, released := make(chan struct{}), make(chan struct{})
	var release sync.Once
	defer release.Do(func() { close(released) })
	fu.SetFault(it.NarInfoPath, fakeupstream.Fault{HoldAt: 1, Hold: func() { close(reached); <-released }})

	log := &lookupLog{Handler: slog.DiscardHandler}
	c := closingCache(t, fu, slog.New(log))

	ctx, cancel := context.WithCancel(context.Background())
	asked := make(chan error, 1)
	go func() { _, err := c.NarInfo(ctx, it.Hash); asked <- err }()
	waitFor(t, "the upstream to be asked", reached)
	cancel()
	if err := waitFor(t, "NarInfo to return", asked); !errors.Is(err, context.Canceled) {
		t.Fatalf("NarInfo after its client left: %v, want context.Canceled", err)
	}

	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	waitFor(t, "Close", closed)
	if n := log.count(); n != 1 {
		t.Errorf("Close returned with the lookup still running (%d lookups logged, want 1)", n)
	}
	if _, err := c.NarInfo(context.Background(), it.Hash); !errors.Is(err, ErrClosed) {
		t.Errorf("NarInfo after Close: %v, want ErrClosed", err)
	}
}

// closingCache is a Cache over fu and a store of its own, which the test
// closes itself; the store closes at the test's end.
func closingCache(t *testing.T, fu *fakeupstream.Upstream, log *slog.Logger) *Cache {
	t.Helper()
	client, err := upstream.New(fu.URL(), upstream.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := New(Options{Store: st, Upstreams: upstream.NewGroup([]*upstream.Client{client}, 0),
		Keys: []narinfo.PublicKey{fu.PublicKey()}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestNoFillAfterClose: a NAR asked for after Close starts no download
// (it would write to the index being closed): its flight has failed with
// ErrClosed and the upstream is not asked.
func TestNoFillAfterClose(t *testing.T) {
	fu := fakeupstream.New(t)
	it := fu.Add(fakeupstream.Path{File: []byte("nar")})
	c := closingCache(t, fu, slog.New(slog.DiscardHandler))
	if _, err := c.NarInfo(context.Background(), it.Hash); err != nil {
		t.Fatal(err)
	}
	c.Close()
	name := path.Base(it.NARPath)
	if err := c.EnsureNAR(context.Background(), name, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("EnsureNAR after Close: %v, want ErrClosed", err)
	}
	if n := fu.Count(it.NARPath); n != 0 {
		t.Errorf("the upstream was asked for the NAR %d times after Close, want 0", n)
	}
}
