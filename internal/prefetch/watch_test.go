package prefetch_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

func TestNextInterval(t *testing.T) {
	const m, h = time.Minute, time.Hour
	tests := []struct {
		last, base, max, want time.Duration
	}{
		{0, m, h, m},                // never checked: the base
		{m, m, h, 2 * m},            // 1m → 2m
		{2 * m, m, h, 4 * m},        // → 4m
		{4 * m, m, h, 8 * m},        // → 8m
		{8 * m, m, h, 16 * m},       // → 16m
		{16 * m, m, h, 32 * m},      // → 32m
		{32 * m, m, h, h},           // → 64m, capped at 1h
		{h, m, h, h},                // stays at the cap
		{10 * time.Second, m, h, m}, // below the base: floored
		{5 * m, 10 * m, h, 10 * m},  // base raised since: floored
		{2 * h, m, h, h},            // max lowered since: capped
		{m, m, m, m},                // base == max
	}
	for _, tt := range tests {
		if got := prefetch.NextInterval(tt.last, tt.base, tt.max); got != tt.want {
			t.Errorf("NextInterval(%v, %v, %v) = %v, want %v", tt.last, tt.base, tt.max, got, tt.want)
		}
	}
	// The whole schedule from the first check: 1m, 2m, 4m, … up to 1h.
	var got []time.Duration
	for d := time.Duration(0); len(got) < 9; {
		d = prefetch.NextInterval(d, m, h)
		got = append(got, d)
	}
	want := []time.Duration{m, 2 * m, 4 * m, 8 * m, 16 * m, 32 * m, h, h, h}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("schedule %v, want %v", got, want)
			break
		}
	}
}

// row flushes the miss log and returns hash's row.
func (e *env) row(t *testing.T, hash string) store.Miss {
	t.Helper()
	ctx := context.Background()
	if err := e.Misses.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	misses, err := e.Store.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range misses {
		if m.Hash == hash {
			return m
		}
	}
	t.Fatalf("no miss row for %s in %+v", hash, misses)
	return store.Miss{}
}

// TestWatcher walks one missing path through the watcher's schedule with a
// fake clock, until it appears upstream and is prefetched with its closure.
func TestWatcher(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, prefetch.Options{})
	w := prefetch.NewWatcher(e.Store, e.Cache, e.Prefetch, prefetch.WatchOptions{Recheck: time.Minute, RecheckMax: time.Hour})

	hash := fakeupstream.RandomHash()
	narinfoPath := "/" + hash + ".narinfo"
	if _, err := e.Cache.NarInfo(ctx, hash); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("NarInfo of a missing path: %v", err)
	}
	seen := e.row(t, hash).LastSeen
	asked := func() int { return e.Upstream.Count(narinfoPath) }
	if asked() != 1 {
		t.Fatalf("upstream asked %d times, want 1", asked())
	}

	// step runs CheckDue at seen+at and checks the upstream was asked
	// wantAsks times in all and the row's schedule.
	step := func(name string, at time.Duration, wantAsks int, wantNext time.Duration, wantInterval time.Duration) {
		t.Helper()
		w.CheckDue(ctx, seen.Add(at))
		if got := asked(); got != wantAsks {
			t.Errorf("%s: upstream asked %d times, want %d", name, got, wantAsks)
		}
		m := e.row(t, hash)
		if !m.NextCheck.Equal(seen.Add(wantNext)) || m.CheckInterval != wantInterval {
			t.Errorf("%s: next check at +%v every %v, want +%v every %v", name,
				m.NextCheck.Sub(seen), m.CheckInterval, wantNext, wantInterval)
		}
	}
	step("not yet due", 30*time.Second, 1, time.Minute, time.Minute)
	step("still not due", 59*time.Second, 1, time.Minute, time.Minute)
	step("due, still missing", 61*time.Second, 2, 61*time.Second+2*time.Minute, 2*time.Minute)
	step("next not yet due", 2*time.Minute, 2, 61*time.Second+2*time.Minute, 2*time.Minute)
	step("due again, still missing", 3*time.Minute+2*time.Second, 3, 3*time.Minute+2*time.Second+4*time.Minute, 4*time.Minute)

	// Pushed upstream, with a reference.
	dep := e.Upstream.Add(fakeupstream.Path{Name: "dep", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	it := e.Upstream.Add(fakeupstream.Path{Hash: hash, Name: "pushed", File: fakeupstream.RandomBytes(5000), Compression: "xz",
		References: []string{baseName(dep)}})
	step("not due though it is there", 7*time.Minute, 3, 3*time.Minute+2*time.Second+4*time.Minute, 4*time.Minute)
	if jobs := e.Prefetch.List(); len(jobs) != 0 {
		t.Fatalf("a job started before the check was due: %+v", jobs)
	}
	w.CheckDue(ctx, seen.Add(8*time.Minute))
	jobs := e.Prefetch.List()
	if len(jobs) != 1 {
		t.Fatalf("after the path appeared: %d jobs, want 1", len(jobs))
	}
	st := e.waitJob(t, jobs[0].ID)
	if st.State != prefetch.StateDone || st.Paths != 2 || st.Cached != 2 || !st.Request.Closure {
		t.Errorf("watcher's job: %+v, want a closure job done with 2 paths", st)
	}
	e.assertCached(t, it)
	e.assertCached(t, dep)

	m := e.row(t, hash)
	if m.Outcome != store.OutcomeFetched || m.StorePath != it.StorePath || m.Bytes != int64(len(it.File)) {
		t.Errorf("row after the prefetch: %+v", m)
	}
	if !m.NextCheck.IsZero() || m.CheckInterval != 0 || m.Count != 1 {
		t.Errorf("row after the prefetch: next check %v every %v, count %d; want none and 1",
			m.NextCheck, m.CheckInterval, m.Count)
	}
	before := e.Upstream.Total()
	w.CheckDue(ctx, seen.Add(24*time.Hour))
	if got := e.Upstream.Total(); got != before {
		t.Errorf("a fetched path was checked again (%d requests)", got-before)
	}
	if jobs := e.Prefetch.List(); len(jobs) != 1 {
		t.Errorf("%d jobs, want still 1", len(jobs))
	}
}

// TestWatcherSkipsOtherOutcomes checks only not-found rows are re-asked.
func TestWatcherSkipsOtherOutcomes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, prefetch.Options{})
	w := prefetch.NewWatcher(e.Store, e.Cache, e.Prefetch, prefetch.WatchOptions{})
	t0 := time.Now().Add(-24 * time.Hour)
	fetched, failed := fakeupstream.RandomHash(), fakeupstream.RandomHash()
	_, err := e.Store.RecordMisses(ctx, []store.MissEvent{
		{Hash: fetched, At: t0, Asked: true, Outcome: store.OutcomeFetched},
		{Hash: failed, At: t0, Asked: true, Outcome: store.OutcomeUpstreamError},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.CheckDue(ctx, time.Now())
	if n := e.Upstream.Total(); n != 0 {
		t.Errorf("upstream asked %d times", n)
	}
	for _, h := range []string{fetched, failed} {
		if m := e.row(t, h); !m.NextCheck.IsZero() {
			t.Errorf("%s (%s) got a check scheduled: %v", h, m.Outcome, m.NextCheck)
		}
	}
}

// TestWatcherUpstreamDown checks an outage keeps the interval rather than
// doubling it.
func TestWatcherUpstreamDown(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, prefetch.Options{})
	w := prefetch.NewWatcher(e.Store, e.Cache, e.Prefetch, prefetch.WatchOptions{Recheck: time.Minute})
	hash := fakeupstream.RandomHash()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.Store.RecordMisses(ctx, []store.MissEvent{{Hash: hash, At: t0, Asked: true, Outcome: store.OutcomeNotFound}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.UpdateMiss(ctx, hash, func(m *store.Miss) { m.NextCheck, m.CheckInterval = t0.Add(8*time.Minute), 8*time.Minute }); err != nil {
		t.Fatal(err)
	}
	e.Upstream.SetFault("/"+hash+".narinfo", fakeupstream.Fault{Status: http.StatusBadGateway})
	now := t0.Add(9 * time.Minute)
	w.CheckDue(ctx, now)
	if n := e.Upstream.Count("/" + hash + ".narinfo"); n != 3 {
		t.Errorf("upstream asked %d times, want 3 (a 502 is retried twice)", n)
	}
	m := e.row(t, hash)
	if !m.NextCheck.Equal(now.Add(8*time.Minute)) || m.CheckInterval != 8*time.Minute || m.Outcome != store.OutcomeNotFound {
		t.Errorf("after an outage: %+v; want the same 8m interval from now", m)
	}
}

func TestWatcherRunOff(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	w := prefetch.NewWatcher(e.Store, e.Cache, e.Prefetch, prefetch.WatchOptions{Recheck: -1})
	done := make(chan struct{})
	go func() { w.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run with watching off did not return")
	}
}

// countingMissLog counts the write transactions the watcher asks for.
type countingMissLog struct {
	prefetch.MissLog
	writes int
}

func (c *countingMissLog) UpdateMisses(ctx context.Context, fns map[string]func(*store.Miss)) error {
	c.writes++
	return c.MissLog.UpdateMisses(ctx, fns)
}

// TestWatcherFirstPassOneWrite: the first pass after a start schedules
// every not-found row; it did so in one fsync'd transaction per row, which
// held the index's writers that many times. Now it is one for the pass.
func TestWatcherFirstPassOneWrite(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, prefetch.Options{})
	log := &countingMissLog{MissLog: e.Store}
	w := prefetch.NewWatcher(log, e.Cache, e.Prefetch, prefetch.WatchOptions{Recheck: time.Minute})
	t0 := time.Now().UTC()
	var events []store.MissEvent
	for range 200 {
		events = append(events, store.MissEvent{Hash: fakeupstream.RandomHash(), At: t0, Asked: true, Outcome: store.OutcomeNotFound})
	}
	if _, err := e.Store.RecordMisses(ctx, events); err != nil {
		t.Fatal(err)
	}
	w.CheckDue(ctx, t0.Add(time.Second)) // none due yet: every row gets its schedule
	if log.writes != 1 {
		t.Errorf("first pass over %d rows: %d write transactions, want 1", len(events), log.writes)
	}
	rows, err := e.Store.Misses(ctx)
	if err != nil || len(rows) != len(events) {
		t.Fatalf("Misses: %d rows, %v", len(rows), err)
	}
	for _, m := range rows {
		if !m.NextCheck.Equal(t0.Add(time.Minute)) || m.CheckInterval != time.Minute {
			t.Fatalf("row %s: NextCheck %v, CheckInterval %v; want %v, 1m", m.Hash, m.NextCheck, m.CheckInterval, t0.Add(time.Minute))
		}
	}
	if n := e.Upstream.Total(); n != 0 {
		t.Errorf("upstream asked %d times before any check was due", n)
	}
}
