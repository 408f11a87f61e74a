package admin_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

func TestWarm(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	items := chain(e.Upstream) // top → mid → leaf
	top, mid := items[0], items[1]
	nobody := "/nix/store/" + fakeupstream.RandomHash() + "-builder-image"
	target := warm.Target{Flake: "path:/macs", Attr: "packages.x.image"}
	report := func(rev string, roots ...string) warm.Report {
		return warm.Report{Target: target, Lock: warm.Lock{NarHash: rev}, Coverage: warm.Coverage{Roots: roots}}
	}

	r1 := report("sha256-one", top.StorePath, nobody)
	r1.Missing, r1.MissingPaths = 1, []string{nobody}
	res, err := e.client.Warm(ctx, admin.WarmRequest{Report: r1, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pinned != 2 || res.Missing != 1 || len(res.Unpinned) != 0 {
		t.Errorf("first warm: %+v", res)
	}
	st := e.waitJob(t, res.Job.ID)
	if st.Cached != 3 || len(st.Failed) != 1 || narinfo.HashOfStorePath(nobody) != st.Failed[0].Path {
		t.Errorf("first warm's prefetch: cached %d, failed %+v; want top's closure cached, the image failed", st.Cached, st.Failed)
	}
	e.flush(t)
	misses, err := e.client.Misses(ctx, admin.MissFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(misses) != 1 || misses[0].StorePath != nobody || misses[0].Attr != target.String() || misses[0].Rev != "sha256-one" || misses[0].Outcome != store.OutcomeNotFound {
		t.Errorf("miss log: %+v; want the image, not found, for %s at sha256-one", misses, target)
	}

	// A new revision needs mid alone: keep 1 unpins the first's.
	res, err = e.client.Warm(ctx, admin.WarmRequest{Report: report("sha256-two", mid.StorePath), Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(t, res.Job.ID)
	if d := cmp.Diff(slices.Sorted(slices.Values([]string{nobody, top.StorePath})), slices.Sorted(slices.Values(res.Unpinned))); d != "" {
		t.Errorf("second warm unpinned (-want +got):\n%s", d)
	}
	pins, err := e.client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || pins[0].StorePath != mid.StorePath || len(pins[0].Warm) != 1 || pins[0].Warm[0].Rev != "sha256-two" {
		t.Errorf("pins: %+v; want mid, for sha256-two", pins)
	}
	status, err := e.client.WarmStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(status) != 1 || status[0].Target != target.String() || status[0].Rev != "sha256-two" || status[0].Warmed.IsZero() || !status[0].Complete() {
		t.Errorf("warm status: %+v", status)
	}

	for _, bad := range []admin.WarmRequest{
		{},
		{Report: warm.Report{Target: target, Coverage: warm.Coverage{Roots: []string{top.StorePath}}}},
		{Report: report("sha256-x")},
		{Report: report("sha256-x", "nope")},
	} {
		if _, err := e.client.Warm(ctx, bad); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("Warm(%+v): err = %v, want a bad request", bad, err)
		}
	}
}
