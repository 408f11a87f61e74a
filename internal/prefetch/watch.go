package prefetch

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// MissLog is what the watcher needs of the miss log.
type MissLog interface {
	Misses(ctx context.Context) ([]store.Miss, error)
	// UpdateMisses changes each hash's row with its func, in one
	// transaction; rows missing are skipped (the error wraps
	// store.ErrNotFound).
	UpdateMisses(ctx context.Context, fns map[string]func(*store.Miss)) error
}

// Asker asks the upstreams about a path without caching it.
type Asker interface {
	AskUpstreams(ctx context.Context, hash string) (string, *narinfo.Info, error)
	Forget(hash string)
}

// WatchOptions configure a Watcher.
type WatchOptions struct {
	// Recheck is the first wait before re-asking about a path no upstream
	// had; it doubles after each "still not found" up to RecheckMax.
	// Default 1m; negative turns watching off.
	Recheck    time.Duration
	RecheckMax time.Duration // default 1h
	Logger     *slog.Logger
}

// Watcher re-asks the upstreams about paths recorded as not found, with
// backoff, and prefetches a path with its closure as soon as one has it:
// a path pushed to the upstream is pulled into the LAN cache before any
// client asks again.
type Watcher struct {
	misses   MissLog
	asker    Asker
	prefetch *Manager
	base     time.Duration
	max      time.Duration
	log      *slog.Logger
}

// NewWatcher returns a Watcher; Run starts it.
func NewWatcher(misses MissLog, asker Asker, m *Manager, opts WatchOptions) *Watcher {
	if opts.Recheck == 0 {
		opts.Recheck = time.Minute
	}
	if opts.RecheckMax == 0 {
		opts.RecheckMax = time.Hour
	}
	if opts.RecheckMax < opts.Recheck {
		opts.RecheckMax = opts.Recheck
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{misses: misses, asker: asker, prefetch: m, base: opts.Recheck, max: opts.RecheckMax, log: opts.Logger}
}

// NextInterval is the wait after a check that found nothing: double the
// last one, at least base, at most max.
func NextInterval(last, base, max time.Duration) time.Duration {
	next := 2 * last
	if next < base {
		next = base
	}
	if next > max {
		next = max
	}
	return next
}

// Run checks due paths until ctx ends. It wakes often enough to honour the
// shortest interval, and returns at once when watching is off.
func (w *Watcher) Run(ctx context.Context) {
	if w.base < 0 {
		return
	}
	tick := min(w.base/4, 15*time.Second)
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.CheckDue(ctx, time.Now())
		}
	}
}

// CheckDue re-asks about every not-found (or refused) path whose check is
// due at now.
// The schedules it sets are written at the end of the pass, in one
// transaction: the first pass after a start schedules every not-found row,
// and one fsync'd transaction each held the index's writers for as long.
func (w *Watcher) CheckDue(ctx context.Context, now time.Time) {
	misses, err := w.misses.Misses(ctx)
	if err != nil {
		w.log.Warn("watch: read miss log", "err", err)
		return
	}
	p := pass{}
	defer w.write(ctx, p)
	asked := 0
	for _, m := range misses {
		if ctx.Err() != nil || asked >= maxChecksPerPass {
			return
		}
		if !store.Unanswered(m.Outcome) {
			continue
		}
		due, interval := m.NextCheck, m.CheckInterval
		if due.IsZero() {
			due, interval = m.LastSeen.Add(w.base), w.base
		}
		if now.Before(due) {
			if m.NextCheck.IsZero() {
				p.schedule(m.Hash, due, interval)
			}
			continue
		}
		w.check(ctx, p, m, interval, now)
		asked++
	}
}

// pass collects the schedules one CheckDue sets, by hash.
type pass map[string]func(*store.Miss)

func (p pass) schedule(hash string, at time.Time, interval time.Duration) {
	p[hash] = func(m *store.Miss) {
		// A client's fetch since the pass read the row ended its watch.
		if store.Unanswered(m.Outcome) {
			m.NextCheck, m.CheckInterval = at, interval
		}
	}
}

// write stores a pass's schedules. A row gone meanwhile (pruned) is fine.
func (w *Watcher) write(ctx context.Context, p pass) {
	if len(p) == 0 || ctx.Err() != nil {
		return
	}
	if err := w.misses.UpdateMisses(ctx, p); err != nil && !errors.Is(err, store.ErrNotFound) {
		w.log.Warn("watch: update miss log", "rows", len(p), "err", err)
	}
}

// maxChecksPerPass spreads a backlog (say, every row due at once after a
// restart) over several ticks instead of asking upstreams thousands of
// times in one burst.
const maxChecksPerPass = 50

func (w *Watcher) check(ctx context.Context, p pass, m store.Miss, interval time.Duration, now time.Time) {
	up, ni, err := w.asker.AskUpstreams(ctx, m.Hash)
	switch {
	case err == nil:
		w.log.Info("watch: missing path appeared upstream; prefetching its closure",
			"path", ni.StorePath, "upstream", up)
		w.asker.Forget(m.Hash)
		if _, err := w.prefetch.Start(Request{Paths: []string{m.Hash}, Closure: true}); err != nil {
			w.log.Warn("watch: start prefetch", "path", ni.StorePath, "err", err)
		}
		// The row stays "not-found" until the prefetch records the fetch;
		// push the next check out so it is not started twice meanwhile.
		p.schedule(m.Hash, now.Add(interval), interval)
	case errors.Is(err, cache.ErrNotFound):
		next := NextInterval(interval, w.base, w.max)
		p.schedule(m.Hash, now.Add(next), next)
	case ctx.Err() != nil:
	default:
		// Upstreams down: try again after the same interval. Skipped
		// ones were logged once, when their outage began.
		level := slog.LevelWarn
		if upstream.Skipped(err) {
			level = slog.LevelDebug
		}
		w.log.Log(ctx, level, "watch: upstreams unavailable", "hash", m.Hash, "err", err)
		p.schedule(m.Hash, now.Add(interval), interval)
	}
}
