// Package evict keeps the cache within its disk bound: it watches the NAR
// bytes against --max-size and the free space against --min-free, and when
// either is passed it evicts the least recently served NAR files, in
// batches, in the background, down to a low watermark. It never drops what
// must stay: pinned paths, the latest variants --keep-latest names, their
// closures, and NARs with no upstream to refill them from. Downloads
// reserve room before they start, so one large NAR never pushes the cache
// past its bound halfway.
package evict

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Reasons a NAR file is evicted, as gc reports them and metrics label them.
const (
	ReasonSize      = "size"       // the cache passed --max-size
	ReasonFreeSpace = "free-space" // the disk's free space fell under --min-free
	ReasonRetention = "retention"  // an older variant --keep-latest no longer keeps (gc only)
)

// Store is what eviction needs of the store (*store.Store).
type Store interface {
	NARBytes() int64
	IndexSize() int64
	Disk() (free, total uint64, err error)
	NARCount() int64
	NARsByAge(ctx context.Context, fn func(*store.NARUse) (bool, error)) error
	LookupNARs(ctx context.Context, names []string) (map[string]store.NARUse, error)
	Refillable(ctx context.Context, names []string) (map[string]bool, error)
	WalkSources(ctx context.Context, match func(storePath string) bool, fn func(name string, src store.NARSource) error) error
	FlushAccess(ctx context.Context) error
	EvictNARs(ctx context.Context, names []string) (int64, error)
	NARSource(ctx context.Context, name string) (store.NARSource, error)
	DeletePath(ctx context.Context, hash string) (store.Deleted, error)
	Pins(ctx context.Context) ([]store.Pin, error)
	ReadNarInfo(ctx context.Context, hash string) ([]byte, error)
	// For pruning the index (prune.go).
	FlushServed(ctx context.Context) error
	WalkNarInfoUse(ctx context.Context, cutoff time.Time, fn func(*store.NarInfoUse) error) error
	PruneNarInfos(ctx context.Context, hashes []string, cutoff time.Time, keep func(nar string) bool) (int, bool, error)
}

// Config configures an Evictor. Zero values mean defaults.
type Config struct {
	// MaxSize bounds the NAR files plus the index, in bytes; 0: no bound.
	MaxSize int64
	// MinFree is the free space to keep on the cache dir's file system.
	MinFree int64
	// KeepLatest keeps the newest variants of matching store paths.
	KeepLatest []Rule
	// EvictUploads lets a pass delete the least recently served uploaded
	// paths (narinfo with NAR: nothing can refill them) that nothing
	// protected or cached needs. Without it an upload leaves only when a
	// KeepLatest rule supersedes it, or by an admin's delete.
	EvictUploads bool
	// Interval is how often the bound is checked; default 10s. Reservations
	// and write failures check it at once.
	Interval time.Duration
	// Batch is how many files one index transaction evicts; default 2048.
	// The transaction holds bbolt's write lock, which every NAR commit and
	// narinfo store waits on: at 200,000 NARs a pass freeing 10 GiB held
	// it at most 0.03-0.17 s per batch of 2048, 0.14-0.26 s per 8192 (for
	// 10-15 % less CPU over the pass), 0.24-1.6 s in one transaction
	// (which used more CPU and twice the memory): BENCHMARKS.md.
	Batch int
	// Pause is how long the pass waits after each batch but the last, as
	// a multiple of the time the batch took, when the proxy's goroutines
	// wait for a CPU and no download waits for room (pauseAfter): with 3
	// (the default), a pass holds at most a quarter of a core while
	// clients' work is waiting, and runs straight through otherwise
	// (BENCHMARKS.md). Negative: never.
	Pause float64
	// PruneAfter is how long a narinfo whose NAR is evicted stays in the
	// index neither served nor stored before it is pruned, with its NAR's
	// origin record; default DefaultPruneAfter. Negative keeps them all.
	PruneAfter time.Duration
	// Now is the clock pruning judges ages by; default time.Now (tests).
	Now     func() time.Time
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Evictor keeps the cache within its bound. It is safe for concurrent use.
type Evictor struct {
	st  Store
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics

	kick chan struct{}

	running sync.Mutex // one pass at a time
	passMu  sync.Mutex
	started uint64        // passes started, for Reserve's wait
	passes  uint64        // passes ended
	passed  chan struct{} // closed and replaced after each pass
	// roomWaiters are the downloads waiting for a pass to make room:
	// while there are any, a pass does not pause.
	roomWaiters atomic.Int32
	busy        func() bool                                // contention.busy; tests set their own
	sleep       func(ctx context.Context, d time.Duration) // a pass's pauses: sleepCtx

	mu       sync.Mutex
	reserved int64     // bytes of downloads in progress, not yet in NARBytes
	diskErr  error     // last failed write to the disk, nil once one succeeds
	diskAt   time.Time // when it failed

	keptMu sync.Mutex
	kept   []Variant // Kept's last answer
	keptAt time.Time

	pruning    sync.Mutex // one Prune at a time
	pruneFrom  string     // where the next round's window starts (under pruning)
	pruneLimit int        // pruneMax; lowered by tests
	pruneFirst time.Duration
	pruneKick  chan struct{} // gc's round left a backlog: pace the loop anew
	// The loop's pace (prunePace), under pruning.
	pruneSoon bool          // a backlog drains: the next round comes soon
	pruneIdle bool          // the fruitless rounds since the last that pruned saw every stale narinfo
	fruitless int           // stale narinfos those rounds considered
	idleTotal int           // stale narinfos when the pace fell back to hourly
	pruneTook time.Duration // the last round's time
}

// New returns an Evictor over st; Run starts its background loop.
func New(st Store, cfg Config) *Evictor {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Pause == 0 {
		cfg.Pause = 3
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 2048
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PruneAfter == 0 {
		cfg.PruneAfter = DefaultPruneAfter
	}
	cfg.Metrics.StoreMaxSize.Set(float64(cfg.MaxSize))
	return &Evictor{st: st, cfg: cfg, log: cfg.Logger, m: cfg.Metrics,
		kick: make(chan struct{}, 1), passed: make(chan struct{}), pruneLimit: pruneMax,
		busy: newContention().busy, sleep: sleepCtx,
		pruneFirst: pruneFirst, pruneKick: make(chan struct{}, 1)}
}

// MaxSize is the configured bound; 0 when there is none.
func (e *Evictor) MaxSize() int64 { return e.cfg.MaxSize }

// Run checks the bound every Interval, and whenever kicked, until ctx ends.
// Pruning the index runs beside it (pruneLoop), so a long walk of the
// index never holds up a pass a download waits for; Run returns once both
// have stopped.
func (e *Evictor) Run(ctx context.Context) {
	pruned := make(chan struct{})
	go func() { defer close(pruned); e.pruneLoop(ctx) }()
	defer func() { <-pruned }()
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := e.Pass(ctx, false); err != nil && ctx.Err() == nil {
			e.log.Warn("eviction pass failed", "err", err)
		}
		if err := e.st.FlushServed(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("flush narinfo serving days", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
	}
}

// Kick asks the background loop for a pass now.
func (e *Evictor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// usage is the cache's size as the bound counts it: NAR files, the index,
// and the downloads in progress at their full size.
type usage struct {
	NARBytes  int64 `json:"nar_bytes"`
	Index     int64 `json:"index_bytes"`
	Reserved  int64 `json:"reserved_bytes"`
	Free      int64 `json:"free_bytes"` // -1 when unknown
	MaxSize   int64 `json:"max_size"`
	MinFree   int64 `json:"min_free"`
	NeedSize  int64 `json:"need_size"`  // bytes to evict for --max-size
	NeedSpace int64 `json:"need_space"` // bytes to evict for --min-free
}

func (e *Evictor) usage(ctx context.Context) (usage, error) {
	if err := ctx.Err(); err != nil {
		return usage{}, err
	}
	e.mu.Lock()
	reserved := e.reserved
	e.mu.Unlock()
	u := usage{NARBytes: e.st.NARBytes(), Index: e.st.IndexSize(), Reserved: reserved, Free: -1,
		MaxSize: e.cfg.MaxSize, MinFree: e.cfg.MinFree}
	if max := e.cfg.MaxSize; max > 0 {
		if total := u.NARBytes + u.Index + u.Reserved; total > max {
			u.NeedSize = total - lowWater(max)
		}
	}
	if free, _, err := e.st.Disk(); err == nil {
		u.Free = int64(free)
		// Reserved bytes are counted as not yet written: a download half
		// done is counted twice, which errs toward room.
		if avail := u.Free - u.Reserved; e.cfg.MinFree > 0 && avail < e.cfg.MinFree {
			u.NeedSpace = e.cfg.MinFree + margin(e.cfg.MinFree) - avail
		}
	}
	return u, nil
}

// lowWater is where eviction for --max-size stops: 90 % of the bound, so
// a pass frees enough for many downloads instead of one at a time.
func lowWater(max int64) int64 { return max / 10 * 9 }

// margin is how far past --min-free eviction for free space goes.
func margin(minFree int64) int64 { return max(minFree/10, 64<<20) }
