package prefetch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cachetest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
)

// env is a real store, miss log, cache and prefetch manager over one fake
// upstream, closed in the order the proxy closes them.
type env struct{ *cachetest.Env }

func newEnv(t *testing.T, opts prefetch.Options) *env {
	t.Helper()
	return &env{cachetest.New(t, opts)}
}

// baseName is a store path's name without the store directory, as
// References lists it.
func baseName(it *fakeupstream.Item) string {
	return strings.TrimPrefix(it.StorePath, narinfo.StoreDir+"/")
}

// closure adds to u five paths a → {b, c}, b → d, c → d, d → {d, e}: a
// diamond over a chain, with a self-reference as real paths have. Each NAR
// is size bytes, xz-named.
func closure(u *fakeupstream.Upstream, size int) map[string]*fakeupstream.Item {
	items := make(map[string]*fakeupstream.Item)
	add := func(name string, refs ...string) {
		h := fakeupstream.RandomHash()
		var full []string
		for _, r := range refs {
			if r == name {
				full = append(full, h+"-"+name)
			} else {
				full = append(full, baseName(items[r]))
			}
		}
		items[name] = u.Add(fakeupstream.Path{Hash: h, Name: name, File: fakeupstream.RandomBytes(size),
			Compression: "xz", References: full})
	}
	add("e")
	add("d", "d", "e")
	add("b", "d")
	add("c", "d")
	add("a", "b", "c")
	return items
}

// assertCached checks that it's narinfo and NAR are in the store.
func (e *env) assertCached(t *testing.T, it *fakeupstream.Item) {
	t.Helper()
	ctx := context.Background()
	ent, err := e.Cache.LocalEntry(ctx, it.Hash)
	if err != nil {
		t.Errorf("%s: narinfo not cached: %v", it.StorePath, err)
		return
	}
	if has, err := e.Store.HasNAR(ctx, ent.NARName); !has || err != nil {
		t.Errorf("%s: NAR not cached: %v, %v", it.StorePath, has, err)
	}
}

// run runs a job and fails t unless it ends within a generous bound.
func (e *env) run(t *testing.T, req prefetch.Request) prefetch.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.Prefetch.Run(ctx, req, nil)
	if err != nil {
		t.Fatalf("Run(%v): %v", req, err)
	}
	return st
}

// waitJob polls the job until it has finished.
func (e *env) waitJob(t *testing.T, id string) prefetch.Status {
	t.Helper()
	var st prefetch.Status
	eventually(t, "job "+id+" finishes", func() bool {
		var err error
		st, err = e.Prefetch.Status(id)
		if err != nil {
			t.Fatalf("Status(%s): %v", id, err)
		}
		return st.State != prefetch.StateRunning
	})
	return st
}

// eventually polls cond every 20ms until it holds or 30s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
