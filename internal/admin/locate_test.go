package admin_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

func TestLocate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	items := chain(e.Upstream) // top → mid → leaf
	top, mid, leaf := items[0], items[1], items[2]
	if _, err := e.Prefetch.Run(ctx, prefetch.Request{Paths: []string{leaf.StorePath}}, nil); err != nil {
		t.Fatal(err)
	}
	nobody := "/nix/store/" + fakeupstream.RandomHash() + "-nobody"
	req := admin.LocateRequest{Paths: []string{top.StorePath, leaf.Hash, nobody, mid.StorePath}}
	res, err := e.client.Locate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := admin.LocateResult{Paths: []warm.PathState{
		{Path: top.StorePath, Where: warm.Upstream, References: []string{mid.StorePath}},
		{Path: leaf.Hash, Where: warm.Cached},
		{Path: nobody, Where: warm.Missing},
		{Path: mid.StorePath, Where: warm.Upstream, References: []string{leaf.StorePath}},
	}}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("locate (-want +got):\n%s", d)
	}
	// Asked again, the answers come from the cache: the narinfos found
	// were stored, the path nobody has is remembered as not found.
	before := e.Upstream.Total()
	if res, err = e.client.Locate(ctx, req); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("locate again (-want +got):\n%s", d)
	}
	if n := e.Upstream.Total() - before; n != 0 {
		t.Errorf("asking again sent %d requests upstream, want 0", n)
	}

	for _, bad := range []admin.LocateRequest{{}, {Paths: []string{"not-a-path"}}, {Paths: make([]string, admin.MaxLocate+1)}} {
		if _, err := e.client.Locate(ctx, bad); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("Locate(%d paths): err = %v, want a bad request", len(bad.Paths), err)
		}
	}
}
