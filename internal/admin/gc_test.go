package admin_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// TestGC: POST /_/gc drops the image variant --keep-latest no longer
// keeps (a dry run only names it), GET /_/kept lists the kept one, and a
// client holding the dropped variant's narinfo still gets its NAR.
func TestGC(t *testing.T) {
	e := newEnvWith(t, envOptions{keepLatest: []evict.Rule{{Glob: "img-*", Keep: 1}}})
	ctx := context.Background()
	old := e.Upstream.Add(fakeupstream.Path{Name: "img-1", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	cur := e.Upstream.Add(fakeupstream.Path{Name: "img-2", File: fakeupstream.RandomBytes(7000), Compression: "xz"})
	var names []string
	for _, it := range []*fakeupstream.Item{old, cur} {
		ent, err := e.Cache.Lookup(ctx, it.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Cache.EnsureNAR(ctx, ent.NARName, nil); err != nil {
			t.Fatal(err)
		}
		names = append(names, ent.NARName)
	}

	dry, err := e.client.GC(ctx, admin.GCRequest{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Evicted) != 1 || dry.Evicted[0].NAR != names[0] || dry.Evicted[0].Reason != evict.ReasonRetention {
		t.Fatalf("dry run: %+v", dry)
	}
	if has, _ := e.Cache.HasNAR(ctx, names[0]); !has {
		t.Fatal("a dry run evicted")
	}
	// The round of pruning the index comes with it (nothing is 30 days
	// old here: internal/evict tests what it prunes).
	if dry.Prune == nil || !dry.Prune.DryRun || dry.Prune.Pruned != 0 {
		t.Errorf("dry run's prune: %+v", dry.Prune)
	}
	rep, err := e.client.GC(ctx, admin.GCRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Prune == nil || rep.Prune.DryRun {
		t.Errorf("gc's prune: %+v", rep.Prune)
	}
	retention := rep.Reasons[2]
	if retention.Reason != evict.ReasonRetention || retention.Files != 1 || retention.Bytes != 5000 {
		t.Errorf("reasons %+v", rep.Reasons)
	}
	if has, _ := e.Cache.HasNAR(ctx, names[0]); has {
		t.Error("the superseded variant is still on disk")
	}
	if has, _ := e.Cache.HasNAR(ctx, names[1]); !has {
		t.Error("the kept variant was evicted")
	}
	kept, err := e.client.Kept(ctx)
	if err != nil || len(kept) != 1 || kept[0].StorePath != cur.StorePath {
		t.Errorf("Kept = %+v, %v", kept, err)
	}
	// The narinfo stays: the NAR is fetched again for a client holding it.
	resp, err := http.Get(e.srv.URL + "/nar/" + names[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("NAR after gc: %d", resp.StatusCode)
	}
}
