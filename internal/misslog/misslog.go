// Package misslog records which store paths the cache could not answer from
// its own disk, so they can be prefetched. Requests must not wait for the
// index's fsync, so events are buffered and merged into the store in one
// transaction per flush interval (and at Close).
package misslog

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Options configure a Log. Zero values mean defaults.
type Options struct {
	// Max bounds the rows kept: once a tenth more have piled up, the least
	// recently seen are pruned back to Max. 0 means the default, 10000;
	// negative keeps every row.
	Max int
	// FlushInterval is how often buffered events are written. Default 1s.
	FlushInterval time.Duration
	Logger        *slog.Logger
}

// Log buffers miss events and writes them to the store.
type Log struct {
	store     *store.Store
	max       int
	unlimited bool
	log       *slog.Logger

	mu      sync.Mutex
	pending []store.MissEvent
	dropped int // events not buffered since the last flush

	// flushMu makes flushes one at a time, in order: Flush returns only
	// once everything recorded before it is written (not while the
	// background flush still writes an earlier batch), and a later batch
	// never lands before an earlier one (its outcome would be overwritten).
	flushMu sync.Mutex
	// rows is how many rows the store holds, counted at the first flush
	// and kept up to date by each; guarded by flushMu.
	rows    int
	counted bool

	stop      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

// maxPending bounds memory if the store cannot keep up; events past it are
// dropped (and logged at the next flush).
const maxPending = 100_000

// New starts a Log writing to st.
func New(st *store.Store, opts Options) *Log {
	if opts.Max == 0 {
		opts.Max = 10_000
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{store: st, max: opts.Max, unlimited: opts.Max < 0, log: opts.Logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.run(opts.FlushInterval)
	return l
}

// Record buffers e; it never blocks on I/O.
func (l *Log) Record(e store.MissEvent) {
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	l.mu.Lock()
	if len(l.pending) < maxPending {
		l.pending = append(l.pending, e)
	} else {
		l.dropped++
	}
	l.mu.Unlock()
}

// Flush writes the buffered events now.
func (l *Log) Flush(ctx context.Context) error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	events, dropped := l.pending, l.dropped
	l.pending, l.dropped = nil, 0
	l.mu.Unlock()
	if dropped > 0 {
		l.log.Warn("miss log fell behind; events dropped", "dropped", dropped)
	}
	if len(events) == 0 {
		return nil
	}
	created, err := l.store.RecordMisses(ctx, events)
	if err != nil {
		return err
	}
	return l.prune(ctx, created)
}

// prune keeps the log near Max rows. It counts the rows in memory, so a
// flush neither counts nor sorts them, and prunes only once a tenth more
// than Max have piled up: the full scan is paid once per Max/10 new
// paths, outside the write transaction (see store.PruneMisses).
func (l *Log) prune(ctx context.Context, created int) error {
	if l.unlimited {
		return nil
	}
	if !l.counted {
		n, err := l.store.MissCount(ctx)
		if err != nil {
			return err
		}
		l.rows, l.counted = n, true
	} else {
		l.rows += created
	}
	if l.rows <= l.max+l.max/10 {
		return nil
	}
	removed, err := l.store.PruneMisses(ctx, l.max)
	l.rows -= removed
	return err
}

// Misses returns the miss log with the events not written yet merged in,
// most recently seen first: a reader right after a miss sees it, though
// the flush that writes it is up to a second away.
func (l *Log) Misses(ctx context.Context) ([]store.Miss, error) {
	// No flush runs meanwhile: each event is either in the store or
	// pending, never in both or neither.
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	rows, err := l.store.Misses(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	pending := slices.Clone(l.pending)
	l.mu.Unlock()
	return store.MergeMisses(rows, pending), nil
}

func (l *Log) run(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := l.Flush(context.Background()); err != nil {
				l.log.Warn("write miss log", "err", err)
			}
		case <-l.stop:
			return
		}
	}
}

// Close writes what is buffered and stops. Call it before closing the store.
func (l *Log) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return l.Flush(context.Background())
}
