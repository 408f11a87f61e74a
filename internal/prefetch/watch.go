package prefetch

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// MissLog is what the watcher needs of the miss log.
type MissLog interface {
	Misses(ctx context.Context) ([]store.Miss, error)
	UpdateMiss(ctx context.Context, hash string, fn func(*store.Miss)) error
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

// CheckDue re-asks about every not-found path whose check is due at now.
func (w *Watcher) CheckDue(ctx context.Context, now time.Time) {
	misses, err := w.misses.Misses(ctx)
	if err != nil {
		w.log.Warn("watch: read miss log", "err", err)
		return
	}
	asked := 0
	for _, m := range misses {
		if ctx.Err() != nil || asked >= maxChecksPerPass {
			return
		}
		if m.Outcome != store.OutcomeNotFound {
			continue
		}
		due, interval := m.NextCheck, m.CheckInterval
		if due.IsZero() {
			due, interval = m.LastSeen.Add(w.base), w.base
		}
		if now.Before(due) {
			if m.NextCheck.IsZero() {
				w.schedule(ctx, m.Hash, due, interval)
			}
			continue
		}
		w.check(ctx, m, interval, now)
		asked++
	}
}

// maxChecksPerPass spreads a backlog (say, every row due at once after a
// restart) over several ticks instead of asking upstreams thousands of
// times in one burst.
const maxChecksPerPass = 50

func (w *Watcher) check(ctx context.Context, m store.Miss, interval time.Duration, now time.Time) {
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
		w.schedule(ctx, m.Hash, now.Add(interval), interval)
	case errors.Is(err, cache.ErrNotFound):
		next := NextInterval(interval, w.base, w.max)
		w.schedule(ctx, m.Hash, now.Add(next), next)
	case ctx.Err() != nil:
	default:
		// Upstreams down: try again after the same interval.
		w.log.Warn("watch: upstreams unavailable", "hash", m.Hash, "err", err)
		w.schedule(ctx, m.Hash, now.Add(interval), interval)
	}
}

func (w *Watcher) schedule(ctx context.Context, hash string, at time.Time, interval time.Duration) {
	err := w.misses.UpdateMiss(ctx, hash, func(m *store.Miss) {
		if m.Outcome == store.OutcomeNotFound {
			m.NextCheck, m.CheckInterval = at, interval
		}
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		w.log.Warn("watch: update miss log", "hash", hash, "err", err)
	}
}
