package evict

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Fleet eviction: proxies sharing one bucket (--storage s3://) keep it
// within --max-size together. Every proxy publishes the accesses it
// served (access.go's records, batched: never a bucket write per hit);
// one proxy at a time, holding the "evict" lease, measures the bucket's
// NAR objects and, past the bound, marks the least recently served NARs
// across the fleet as pending. A pending NAR is deleted on a later pass,
// once the grace period has passed, only if no proxy served it since it
// was marked and nothing pins it: a replica streaming it, or a client
// holding a narinfo that names it, is not broken. Narinfos and NAR
// sources stay, so any proxy refills an evicted NAR on the next request.
// Pins (recorded in the bucket by whichever proxy made them), the
// variants --keep-latest keeps, their closures, and NARs with no upstream
// (uploads) are never marked.

// FleetBucket is what fleet eviction needs of the shared bucket
// (*s3store.Bucket). A missing object is an error wrapping fs.ErrNotExist.
type FleetBucket interface {
	ListNARObjects(ctx context.Context, fn func(s3store.NARObject) error) error
	StatNARObject(ctx context.Context, name string) (s3store.NARObject, error)
	DeleteNARObject(ctx context.Context, name string) error
	GetMeta(ctx context.Context, rel string) ([]byte, error)
	PutMeta(ctx context.Context, rel string, body []byte) error
	DeleteMeta(ctx context.Context, rel string) error
	ListMeta(ctx context.Context, prefix string, fn func(rel string) error) error
	PinnedHashes(ctx context.Context) ([]string, error)
	NarInfo(ctx context.Context, hash string) ([]byte, error)
	Source(ctx context.Context, name string) (store.NARSource, error)
}

// FleetIndex is what fleet eviction needs of this proxy's index
// (*store.Store): NAR sources it reads from the bucket once and keeps.
type FleetIndex interface {
	Store
	NARSource(ctx context.Context, name string) (store.NARSource, error)
}

// Lessor takes the fleet's eviction lease (*fleet.Fills): see
// fleet.Fills.TryLease. An error wrapping ErrLeaseHeld means another
// proxy holds it.
type Lessor interface {
	TryLease(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// evictLease is the lease that makes one proxy at a time evict.
const evictLease = "evict"

// FleetConfig configures a Fleet. Zero values mean defaults.
type FleetConfig struct {
	// MaxSize bounds the bucket's NAR objects, in bytes; 0: this proxy
	// never evicts (it still publishes its accesses for the one that
	// does).
	MaxSize int64
	// KeepLatest keeps the newest variants of matching store paths.
	KeepLatest []Rule
	// Grace is how long a NAR stays pending before it is deleted; longer
	// than the longest fill. Default 1h.
	Grace time.Duration
	// Interval is how often accesses are published and the lease tried;
	// default 1m.
	Interval time.Duration
	// Node names this proxy's access records; unique per process.
	Node string
	// Prune is this proxy's own eviction, whose round of pruning its
	// index gc runs after the fleet's pass; nil: none.
	Prune   *Evictor
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// passHook, in tests, is told when a pass holding the lease starts
	// (true) and ends (false).
	passHook func(start bool)
}

// Fleet keeps a shared bucket within its bound together with the other
// proxies on it. It is safe for concurrent use.
type Fleet struct {
	st    FleetIndex
	b     FleetBucket
	lease Lessor
	cfg   FleetConfig
	log   *slog.Logger
	m     *metrics.Metrics
	acc   *accessRecords

	running     sync.Mutex // one pass at a time in this process
	compactedAt time.Time  // last fold of the access records; under running

	keptMu sync.Mutex
	kept   []Variant
	keptAt time.Time
}

// NewFleet returns the fleet eviction of this proxy; Run starts it, and
// Accessed must be the store's Options.Accessed.
func NewFleet(st FleetIndex, b FleetBucket, lease Lessor, cfg FleetConfig) *Fleet {
	if cfg.Grace <= 0 {
		cfg.Grace = time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	cfg.Metrics.StoreMaxSize.Set(float64(cfg.MaxSize))
	return &Fleet{st: st, b: b, lease: lease, cfg: cfg, log: cfg.Logger, m: cfg.Metrics,
		acc: newAccessRecords(b, cfg.Node)}
}

// Accessed records that the NAR name was served at at; it is published
// with the next pass. It is the store's Options.Accessed: a map write
// under a mutex.
func (f *Fleet) Accessed(name string, at time.Time) { f.acc.touch(name, at) }

// MaxSize is the bound on the bucket's NAR objects; 0 when this proxy
// does not evict.
func (f *Fleet) MaxSize() int64 { return f.cfg.MaxSize }

// Run publishes accesses and, with a bound, takes a turn at eviction
// every Interval until ctx ends; then it publishes what is left.
func (f *Fleet) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := f.pass(ctx, false, false); err != nil && ctx.Err() == nil {
			f.log.Warn("fleet eviction pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := f.acc.publish(pctx); err != nil {
				f.log.Warn("publishing NAR accesses to the bucket failed", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// Collect is gc for the fleet: a pass now, which also marks the variants
// --keep-latest no longer keeps. It fails with ErrLeaseHeld while another
// proxy evicts. dryRun reports what a pass would delete and mark.
func (f *Fleet) Collect(ctx context.Context, dryRun bool) (Report, error) {
	rep, err := f.pass(ctx, dryRun, true)
	if err == nil && f.cfg.Prune != nil {
		f.cfg.Prune.gcPrune(ctx, dryRun, &rep)
	}
	return rep, err
}

// pass publishes this proxy's accesses, then, if it evicts and gets the
// lease, runs one eviction pass over the bucket holding it.
func (f *Fleet) pass(ctx context.Context, dryRun, retention bool) (Report, error) {
	f.running.Lock()
	defer f.running.Unlock()
	rep := Report{DryRun: dryRun, Evicted: []Evicted{}, Kept: []Variant{}}
	for _, r := range []string{ReasonSize, ReasonFreeSpace, ReasonRetention} {
		rep.Reasons = append(rep.Reasons, Reason{Reason: r})
	}
	if !dryRun {
		if err := f.acc.publish(ctx); err != nil {
			// Kept for the next pass; eviction goes on with what the
			// bucket has.
			f.log.Warn("publishing NAR accesses to the bucket failed", "err", err)
		}
	}
	if f.cfg.MaxSize <= 0 && !retention {
		return rep, nil
	}
	held, release, err := f.lease.TryLease(ctx, evictLease)
	if errors.Is(err, ErrLeaseHeld) {
		f.m.FleetEvictPasses.WithLabelValues("held-elsewhere").Inc()
		if retention {
			return rep, fmt.Errorf("%w (%w)", ErrLeaseHeld, err)
		}
		return rep, nil
	}
	if err != nil {
		f.m.FleetEvictPasses.WithLabelValues("error").Inc()
		return rep, fmt.Errorf("eviction lease: %w", err)
	}
	defer release()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(held, cancel)()
	f.m.FleetEvictLeaseHeld.Set(1)
	defer f.m.FleetEvictLeaseHeld.Set(0)
	if f.cfg.passHook != nil {
		f.cfg.passHook(true)
		defer f.cfg.passHook(false)
	}
	start := time.Now()
	err = f.held(ctx, &rep, dryRun, retention)
	rep.Took = Duration(time.Since(start))
	if err != nil {
		f.m.FleetEvictPasses.WithLabelValues("error").Inc()
		return rep, err
	}
	f.m.FleetEvictPasses.WithLabelValues("run").Inc()
	return rep, nil
}

// Kept returns the variants --keep-latest keeps, as of at most a minute
// ago, from what this proxy's index knows of the bucket.
func (f *Fleet) Kept(ctx context.Context) ([]Variant, error) {
	if len(f.cfg.KeepLatest) == 0 {
		return []Variant{}, nil
	}
	f.keptMu.Lock()
	defer f.keptMu.Unlock()
	if f.kept != nil && time.Since(f.keptAt) < keptTTL {
		return f.kept, nil
	}
	v := newVariants(f.cfg.KeepLatest)
	if err := v.collect(ctx, f.st); err != nil {
		return nil, err
	}
	f.kept, f.keptAt = v.kept(), time.Now()
	return f.kept, nil
}
