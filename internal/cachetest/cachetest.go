// Package cachetest assembles, for tests, the proxy's pieces the way the
// server does: a real store in a temp dir, a miss log, a cache asking one
// fake upstream, and a prefetch manager, closed in the order the proxy
// closes them.
package cachetest

import (
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/misslog"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// Env is the assembled pieces.
type Env struct {
	Dir      string
	Store    *store.Store
	Upstream *fakeupstream.Upstream
	Misses   *misslog.Log
	Cache    *cache.Cache
	Prefetch *prefetch.Manager
}

// Settle waits until the cache has no NAR download in flight: a client
// has its last byte before the fill commits the NAR, so a test that looks
// at the store or the disk after a GET waits for the commit.
func (e *Env) Settle(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(e.Cache.Downloads()) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("downloads still in flight after 10 s: %v", e.Cache.Downloads())
		}
	}
}

// New assembles an Env whose pieces are closed when t ends. The miss log
// flushes only when a test calls Flush (or at Close).
func New(t testing.TB, opts prefetch.Options) *Env {
	t.Helper()
	up := fakeupstream.New(t)
	client, err := upstream.New(up.URL(), upstream.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	log := misslog.New(st, misslog.Options{FlushInterval: time.Hour})
	group := upstream.NewGroup([]*upstream.Client{client}, 0)
	t.Cleanup(group.Close) // after the cache's (cleanups run last first)
	c, err := cache.New(cache.Options{
		Store:     st,
		Upstreams: group,
		Keys:      []narinfo.PublicKey{up.PublicKey()},
		Misses:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	mgr := prefetch.NewManager(c, opts)
	t.Cleanup(func() {
		mgr.Close()
		c.Close()
		if err := log.Close(); err != nil {
			t.Errorf("close miss log: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &Env{Dir: dir, Store: st, Upstream: up, Misses: log, Cache: c, Prefetch: mgr}
}
