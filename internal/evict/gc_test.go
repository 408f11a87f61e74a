package evict

import (
	"context"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGCPrunes: gc runs a round of pruning the index after its pass: a
// dry run reports what it would prune (count and bytes) and deletes
// nothing; a real one prunes exactly that, by the same rules (a stale
// narinfo a kept one references stays).
func TestGCPrunes(t *testing.T) {
	c := &clock{}
	c.set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	d := newClockStore(t, c)
	ctx := context.Background()
	paths := []tpath{
		{id: 1, size: kb},                 // stale: pruned
		{id: 2, size: kb, refs: []int{3}}, // stale: pruned, then 3
		{id: 3, size: kb},
		{id: 4, size: kb, refs: []int{5}}, // NAR on disk: stays, keeps 5
		{id: 5, size: kb},
	}
	for _, p := range paths {
		d.add(t, p)
		if p.id != 4 {
			d.evictNAR(t, p.id)
		}
	}
	c.add(days(40))
	reg := metrics.Discard()
	e := New(d, Config{Now: c.now, Metrics: reg})

	dry, err := e.Collect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	p := dry.Prune
	if p == nil || !p.DryRun || p.Pruned != 3 || p.Stale != 4 || p.Needed != 1 || p.Bytes <= 0 || p.Backlog != 0 {
		t.Fatalf("dry run's prune = %+v, want 3 of 4 stale prunable, 1 needed, some bytes", p)
	}
	for _, p := range paths {
		if !d.hasInfo(p.id) {
			t.Errorf("a dry run pruned path %d", p.id)
		}
	}
	if n := testutil.ToFloat64(reg.PrunedNarInfos); n != 0 {
		t.Errorf("pruned_narinfos_total after a dry run = %v", n)
	}

	rep, err := e.Collect(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if q := rep.Prune; q == nil || q.DryRun || q.Pruned != 3 || q.Bytes != p.Bytes || len(rep.Errors) > 0 {
		t.Fatalf("gc's prune = %+v (errors %v), want the 3 (%d bytes) the dry run named", q, rep.Errors, p.Bytes)
	}
	for _, p := range paths {
		if want := p.id >= 4; d.hasInfo(p.id) != want {
			t.Errorf("path %d: narinfo present = %v after gc, want %v", p.id, !want, want)
		}
	}
	if n := testutil.ToFloat64(reg.PrunedNarInfos); n != 3 {
		t.Errorf("pruned_narinfos_total = %v, want 3", n)
	}
	checkClosed(t, d)

	off := New(d, Config{Now: c.now, PruneAfter: -1})
	if rep, err := off.Collect(ctx, true); err != nil || rep.Prune == nil || !rep.Prune.Off {
		t.Errorf("gc with --prune-after 0: prune = %+v, %v; want off", rep.Prune, err)
	}
}
