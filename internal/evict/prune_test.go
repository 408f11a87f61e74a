package evict

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is a settable time for the store's serving stamps and pruning.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func days(n int) time.Duration       { return time.Duration(n) * 24 * time.Hour }
func (d *diskStore) hasInfo(id int) bool {
	_, err := d.ReadNarInfo(context.Background(), hashOf(id))
	return err == nil
}

// newClockStore is newDiskStore whose serving stamps follow c.
func newClockStore(t *testing.T, c *clock) *diskStore {
	t.Helper()
	st, err := store.OpenWith(t.TempDir(), store.Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := &diskStore{Store: st}
	d.free.Store(1 << 40)
	return d
}

// evictNAR drops id's NAR file, keeping its narinfo and origin record.
func (d *diskStore) evictNAR(t *testing.T, id int) {
	t.Helper()
	if _, err := d.EvictNARs(context.Background(), []string{narOf(id)}); err != nil {
		t.Fatal(err)
	}
}

// TestPrune: narinfos whose NAR is gone and that no client can still hold
// are pruned with their origin records; everything a kept narinfo needs,
// pins, --keep-latest survivors, uploads, paths on disk and paths served
// within the TTL stay.
func TestPrune(t *testing.T) {
	c := &clock{}
	c.set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	d := newClockStore(t, c)
	ctx := context.Background()
	paths := []tpath{
		{id: 1, size: kb},                                 // stale: pruned
		{id: 2, size: kb, refs: []int{6}},                 // NAR on disk: stays, and keeps 6 and 7
		{id: 3, size: kb, upload: true},                   // upload: stays
		{id: 4, size: kb, refs: []int{5}},                 // pinned: stays, with 5
		{id: 5, size: kb},                                 // in the pin's closure
		{id: 6, size: kb, refs: []int{7}},                 // referenced by 2
		{id: 7, size: kb},                                 // referenced by 6
		{id: 8, size: kb},                                 // served on day 20: stays
		{id: 9, size: kb, name: "img-a", seen: time.Hour}, // newest variant: stays
		{id: 10, size: kb, name: "img-b"},                 // superseded variant: pruned
		{id: 11, size: kb, refs: []int{12, 11}},           // stale, and only it references 12: both pruned
		{id: 12, size: kb},
		{id: 13, size: kb, refs: []int{14}}, // served on day 20: keeps 14
		{id: 14, size: kb},
	}
	for _, p := range paths {
		d.add(t, p)
	}
	for _, p := range paths {
		if p.id != 2 && !p.upload {
			d.evictNAR(t, p.id)
		}
	}
	if err := d.PutPin(ctx, store.Pin{Hash: hashOf(4), StorePath: hashOf(4)}); err != nil {
		t.Fatal(err)
	}
	reg := metrics.Discard()
	e := New(d, Config{Interval: time.Hour, KeepLatest: []Rule{{Glob: "img-*", Keep: 1}}, Now: c.now, Metrics: reg})

	// Day 20: 8 and 13 are served; nothing is old enough yet. (The day
	// hits are stamped with moves on at each eviction pass's flush.)
	c.add(days(20))
	if err := d.FlushServed(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{8, 13} {
		if _, err := d.NarInfo(ctx, hashOf(id)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := e.Prune(ctx)
	if err != nil || rep.Pruned != 0 {
		t.Fatalf("Prune on day 20 = %+v, %v; want nothing pruned", rep, err)
	}
	// Day 32: stored on day 0, so held by a client until day 31 at most.
	c.add(days(12))
	rep, err = e.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pruned := map[int]bool{1: true, 10: true, 11: true, 12: true}
	if rep.Pruned != len(pruned) || rep.Stopped {
		t.Errorf("Prune on day 32 = %+v, want %d pruned", rep, len(pruned))
	}
	if n := testutil.ToFloat64(reg.PrunedNarInfos); n != float64(len(pruned)) {
		t.Errorf("pruned_narinfos_total = %v, want %d", n, len(pruned))
	}
	for _, p := range paths {
		if got := d.hasInfo(p.id); got == pruned[p.id] {
			t.Errorf("path %d: narinfo present = %v, want %v", p.id, got, !pruned[p.id])
		}
		_, err := d.NARSource(ctx, narOf(p.id))
		if gone := errors.Is(err, store.ErrNotFound); gone != pruned[p.id] {
			t.Errorf("path %d: origin record gone = %v (%v), want %v", p.id, gone, err, pruned[p.id])
		}
	}
	checkClosed(t, d)
	// Day 52: 8 and 13 (served on day 20) go, 14 with 13; the rest stays.
	c.add(days(20))
	if rep, err := e.Prune(ctx); err != nil || rep.Pruned != 3 {
		t.Errorf("Prune on day 52 = %+v, %v; want 8, 13, 14 pruned", rep, err)
	}
	for _, id := range []int{2, 3, 4, 5, 6, 7, 9} {
		if !d.hasInfo(id) {
			t.Errorf("path %d pruned on day 52", id)
		}
	}
	checkClosed(t, d)
}

// checkClosed fails when a narinfo in the index references one that is not.
func checkClosed(t *testing.T, d *diskStore) {
	t.Helper()
	err := d.WalkNarInfoUse(context.Background(), time.Time{}, func(u *store.NarInfoUse) error {
		for _, r := range u.Refs {
			if _, err := d.ReadNarInfo(context.Background(), r); err != nil {
				t.Errorf("narinfo %s references %s, which is gone: %v", u.Hash, r, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPruneNever: a negative PruneAfter keeps every row, however old.
func TestPruneNever(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	d := newClockStore(t, c)
	d.add(t, tpath{id: 1, size: kb})
	d.evictNAR(t, 1)
	c.add(days(400))
	e := New(d, Config{PruneAfter: -1, Now: c.now})
	if rep, err := e.Prune(context.Background()); err != nil || rep.Pruned != 0 || !d.hasInfo(1) {
		t.Errorf("Prune with a negative PruneAfter = %+v, %v", rep, err)
	}
}

// TestPruneOrder: referrers come before what they reference.
func TestPruneOrder(t *testing.T) {
	cands := map[string]*pruneCand{
		"a": {hash: "a", refs: []string{"b", "c"}},
		"b": {hash: "b", refs: []string{"c", "x"}},
		"c": {hash: "c"},
		"d": {hash: "d", refs: []string{"e"}, needed: true},
		"e": {hash: "e", needed: true},
	}
	order := pruneOrder(cands)
	pos := map[string]int{}
	for i, h := range order {
		pos[h] = i
	}
	if len(order) != 3 || pos["a"] > pos["b"] || pos["b"] > pos["c"] {
		t.Errorf("pruneOrder = %v, want a before b before c, nothing needed", order)
	}
}

// TestPruneWindowMoves: with more stale narinfos than a round takes, the
// window moves on: narinfos needed by stale ones outside it this round
// are pruned in a later one, once those are gone. A chain 1 <- 2 <- ... <-
// 6 (each referenced by the next) with rounds of 2 is pruned entirely;
// a window that stayed on 1 and 2 would prune nothing, ever.
func TestPruneWindowMoves(t *testing.T) {
	d, c := staleChain(t, 6)
	e := New(d, Config{Now: c.now})
	e.pruneLimit = 2
	pruned := 0
	for round := 0; round < 10 && pruned < 6; round++ {
		rep, err := e.Prune(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pruned += rep.Pruned
		t.Logf("round %d: %+v (next from %q)", round, rep, e.pruneFrom)
		checkClosed(t, d)
	}
	if pruned != 6 {
		t.Errorf("pruned %d of 6 in 10 rounds", pruned)
	}
}

// staleChain stores paths 1..n, each referencing the one before, with
// their NARs evicted, and moves the clock past --prune-after.
func staleChain(t *testing.T, n int) (*diskStore, *clock) {
	t.Helper()
	c := &clock{}
	c.set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	d := newClockStore(t, c)
	for id := 1; id <= n; id++ {
		p := tpath{id: id, size: kb}
		if id > 1 {
			p.refs = []int{id - 1}
		}
		d.add(t, p)
		d.evictNAR(t, id)
	}
	c.add(days(40))
	return d, c
}

// TestPruneBacklogDrains: the background loop drains a backlog larger
// than one round's window in rounds that follow each other soon, not one
// an hour: a chain of 6 stale narinfos with rounds of 2 (the first
// round prunes nothing: 3 references 2, which references 1) is gone
// long before the hour an hourly loop would take for its second round.
func TestPruneBacklogDrains(t *testing.T) {
	d, c := staleChain(t, 6)
	e := New(d, Config{Now: c.now})
	e.pruneLimit, e.pruneFirst = 2, time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.pruneLoop(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for left := 6; left > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 6 stale narinfos still in the index after 30 s", left)
		}
		time.Sleep(10 * time.Millisecond)
		left = 0
		for id := 1; id <= 6; id++ {
			if d.hasInfo(id) {
				left++
			}
		}
	}
	checkClosed(t, d)
	if w := e.pruneWait(); w != pruneEvery {
		t.Errorf("after the backlog drained the next round is in %s, want %s", w, pruneEvery)
	}
}

// TestPrunePace: rounds come soon while a backlog may drain; once the
// fruitless rounds have looked at every stale narinfo (all needed by one
// that stays), the pace falls back to hourly, until a round prunes again.
func TestPrunePace(t *testing.T) {
	c := &clock{}
	c.set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	d := newClockStore(t, c)
	for id := 1; id <= 6; id++ {
		d.add(t, tpath{id: id, size: kb})
		d.evictNAR(t, id)
	}
	d.add(t, tpath{id: 7, size: kb, refs: []int{1, 2, 3, 4, 5, 6}}) // on disk: needs 1-6
	c.add(days(40))
	e := New(d, Config{Now: c.now})
	e.pruneLimit = 2
	ctx := context.Background()
	for round, wantSoon := range []bool{true, true, false, false} {
		rep, err := e.Prune(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Pruned != 0 || rep.Stale != 2 || rep.Backlog != 4 {
			t.Fatalf("round %d: %+v, want 2 stale (needed), 4 more", round, rep)
		}
		if soon := e.pruneWait() < pruneEvery; soon != wantSoon {
			t.Errorf("round %d: next round soon = %v, want %v", round, soon, wantSoon)
		}
	}
	// A window's worth more stale narinfos (8 and 9, needed by 10):
	// a new backlog, swept soon again.
	d.add(t, tpath{id: 8, size: kb})
	d.add(t, tpath{id: 9, size: kb})
	d.add(t, tpath{id: 10, size: kb, refs: []int{8, 9}})
	d.evictNAR(t, 8)
	d.evictNAR(t, 9)
	c.add(days(40))
	if rep, err := e.Prune(ctx); err != nil || rep.Pruned != 0 || rep.Stale+rep.Backlog != 8 {
		t.Fatalf("round after 8 and 9 went stale: %+v, %v; want 8 stale, none pruned", rep, err)
	}
	if soon := e.pruneWait() < pruneEvery; !soon {
		t.Error("a window's worth of newly stale narinfos: next round not soon")
	}
	// 7's and 10's NARs go too: now all are stale, and a round prunes again.
	d.evictNAR(t, 7)
	d.evictNAR(t, 10)
	c.add(days(40))
	for round := 0; ; round++ {
		rep, err := e.Prune(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Pruned == 0 {
			if round > 4 {
				t.Fatalf("nothing pruned in %d rounds", round)
			}
			continue
		}
		if soon := e.pruneWait() < pruneEvery; soon != (rep.Backlog > 0) {
			t.Errorf("after a round that pruned (%+v): next round soon = %v", rep, soon)
		}
		break
	}
}
