// Package cache is the pull-through logic: answer from the local store, else
// ask the upstreams once (however many clients ask at the same moment), check
// what they answer, keep it, and serve it.
package cache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Sentinel errors of the cache.
var (
	// ErrNotFound means neither the store nor any upstream has it.
	ErrNotFound = errors.New("cache: not found")
	// ErrAborted means a response body was cut short after its headers were
	// sent; the only honest thing left is to abort the connection.
	ErrAborted = errors.New("cache: response aborted")
	// ErrClosed means the Cache is closed: it starts no upstream work.
	ErrClosed = errors.New("cache: closed")
	// ErrRefused means an upstream answered with a narinfo the cache
	// refused: no trusted signature, malformed, or naming another path or
	// host. A lookup that found nothing else is ErrNotFound as well.
	ErrRefused = errors.New("cache: upstream narinfo refused")
	// ErrUnavailable means the upstreams could not answer (down, timed out,
	// 5xx): not a miss. It is upstream.ErrUnavailable, so either matches.
	ErrUnavailable = upstream.ErrUnavailable
	// ErrVerify means a downloaded NAR was not what its narinfo promised.
	ErrVerify = errors.New("cache: NAR does not match its narinfo")
)

// Skipped reports whether err is an outage already reported: every
// upstream that could not answer was skipped while its breaker is open.
// Callers log such a failure quietly, not once per request.
func Skipped(err error) bool { return upstream.Skipped(err) }

// refusedError is an ErrRefused whose text is its cause's alone.
type refusedError struct{ err error }

func (e *refusedError) Error() string   { return e.err.Error() }
func (e *refusedError) Unwrap() []error { return []error{ErrRefused, e.err} }

// Reason is the one line an error is reported by: the
// X-Nix-Cache-Proxy-Error header of a failed answer and the miss log's row
// say the same thing. Whitespace is collapsed and the text capped.
func Reason(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// Options configure a Cache. Zero values mean defaults.
type Options struct {
	Store     *store.Store
	Upstreams *upstream.Group
	// Keys are the trusted signing keys; a narinfo signed by none is refused.
	Keys []narinfo.PublicKey
	// SkipVerify accepts unsigned narinfos (--verify-signatures=false).
	SkipVerify bool
	// SecretKey, if set, adds the proxy's own signature to every narinfo
	// it keeps with a valid signature by one of Keys (next to that one);
	// with SkipVerify, one without is kept unsigned by the proxy.
	SecretKey *narinfo.SecretKey
	// NegativeTTL is how long "not found anywhere" is remembered; default
	// 1m, negative: not at all.
	NegativeTTL time.Duration
	// FetchTimeout bounds one whole NAR download; default 6h.
	FetchTimeout time.Duration
	// Fetch tunes how NARs come from the upstreams.
	Fetch FetchOptions
	// Misses records what was not answered from the store; may be nil.
	Misses MissRecorder
	// Room is the disk bound; nil keeps every NAR.
	Room Room
	// Fleet, if set, makes one proxy of those on the same shared storage
	// fetch each NAR, the others streaming it from that one.
	Fleet Fleet
	// Recompress makes a zstd file of every NAR fetched as xz, bzip2 or
	// (from 64 KiB) none, and serves that one from then on (--recompress).
	Recompress bool
	// RecompressGrace is how long an original stays on disk once its zstd
	// file is served instead, for clients that got the narinfo just
	// before; default 10m.
	RecompressGrace time.Duration
	// RecompressQuiet is how long no NAR must have been served or fetched
	// before a recompression goes on; default 2s. RecompressMaxDefer is
	// how long one waits for such a pause at most; default 10m.
	RecompressQuiet    time.Duration
	RecompressMaxDefer time.Duration
	// Metrics, if nil, are kept but not exported.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// FetchOptions tune NAR downloads. Zero values mean defaults.
type FetchOptions struct {
	// Connections is how many ranged connections fetch one NAR of at least
	// Threshold bytes at once, from an upstream that accepts ranges
	// (--fetch-connections); default 4, 1 for one stream.
	Connections int
	// Threshold is the size from which a NAR is fetched in segments;
	// default 64 MiB.
	Threshold int64
	// Retries is how many times in a row a broken or stalled connection is
	// resumed from where it stopped without landing a byte; default 5.
	Retries int
	// Backoff is the wait before the first resume, doubled for each next
	// one up to 30s; default 1s.
	Backoff time.Duration
	// NoteEvery is how many fetched bytes pass between two progress notes
	// of a resumable download; default 8 MiB. A note is a small file
	// written without fsync, which a resume after the process was killed
	// can trust on the same boot; every 8th also fsyncs the part file, for
	// a resume after the machine restarted.
	NoteEvery int64
}

func (o FetchOptions) withDefaults() FetchOptions {
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.Threshold <= 0 {
		o.Threshold = 64 << 20
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.NoteEvery <= 0 {
		o.NoteEvery = 8 << 20
	}
	return o
}

// MissRecorder is told about every lookup not answered from the store and
// every NAR fetched. Record must not block on I/O.
type MissRecorder interface {
	Record(store.MissEvent)
}

// Room holds disk room for NAR downloads (internal/evict). Reserve is asked
// before a NAR of size bytes (FileSize, else NarSize; 0: unknown) is
// fetched to be kept; an error means it is streamed to its clients without
// being kept. grow is called, without waiting, when more bytes than size
// turn out to land (total is all of them); release once the download
// ends, with whether it was kept and the error writing it to disk failed
// with (nil if none).
type Room interface {
	Reserve(ctx context.Context, size int64) (grow func(total int64), release func(kept bool, writeErr error), err error)
}

type unbounded struct{}

func (unbounded) Reserve(context.Context, int64) (func(int64), func(bool, error), error) {
	return func(int64) {}, func(bool, error) {}, nil
}

type discardMisses struct{}

func (discardMisses) Record(store.MissEvent) {}

// Cache serves narinfos, NARs and auxiliary files from the store, filling
// it from the upstreams on a miss.
type Cache struct {
	store     *store.Store
	upstreams *upstream.Group
	clients   map[string]*upstream.Client
	keys      []narinfo.PublicKey
	verify    bool
	secretKey *narinfo.SecretKey
	fetchTTL  time.Duration
	fetch     FetchOptions
	log       *slog.Logger
	negative  *negativeCache
	misses    MissRecorder
	room      Room
	fleet     Fleet
	metrics   *metrics.Metrics
	hits      prometheus.Counter // narinfo hits: resolved once, not per request
	stats     stats              // the same counts for Stats
	lookups   singleflight.Group
	// recompress: see transcode.go; transcodes runs each once.
	recompress      bool
	recompressGrace time.Duration
	transcodes      singleflight.Group
	// active is the client work in progress, that the queued
	// recompressions wait to pause for RecompressQuiet.
	active             *activity
	queue              transcodeQueue
	recompressQuiet    time.Duration
	recompressMaxDefer time.Duration

	// Downloads and shared lookups are detached from the requests that
	// start them; ctx ends them at Close, wg waits for them.
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // guards flights, and orders detach before Close
	flights map[string]*flight
}

// New returns a Cache over opts.Store and opts.Upstreams.
func New(opts Options) (*Cache, error) {
	if opts.Store == nil || opts.Upstreams == nil {
		return nil, errors.New("cache: Store and Upstreams are required")
	}
	if !opts.SkipVerify && len(opts.Keys) == 0 {
		return nil, errors.New("cache: no trusted public key, and signature checks are on")
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = time.Minute
	}
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = 6 * time.Hour
	}
	if opts.RecompressGrace <= 0 {
		opts.RecompressGrace = 10 * time.Minute
	}
	if opts.RecompressQuiet <= 0 {
		opts.RecompressQuiet = defaultRecompressQuiet
	}
	if opts.RecompressMaxDefer <= 0 {
		opts.RecompressMaxDefer = defaultRecompressMaxDefer
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Misses == nil {
		opts.Misses = discardMisses{}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.Discard()
	}
	if opts.Room == nil {
		opts.Room = unbounded{}
	}
	clients := make(map[string]*upstream.Client)
	for _, c := range opts.Upstreams.Clients() {
		clients[c.String()] = c
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Cache{
		store:              opts.Store,
		upstreams:          opts.Upstreams,
		clients:            clients,
		keys:               opts.Keys,
		verify:             !opts.SkipVerify,
		secretKey:          opts.SecretKey,
		fetchTTL:           opts.FetchTimeout,
		fetch:              opts.Fetch.withDefaults(),
		log:                opts.Logger,
		negative:           newNegativeCache(opts.NegativeTTL),
		misses:             opts.Misses,
		room:               opts.Room,
		fleet:              opts.Fleet,
		recompress:         opts.Recompress,
		recompressGrace:    opts.RecompressGrace,
		active:             newActivity(),
		recompressQuiet:    opts.RecompressQuiet,
		recompressMaxDefer: opts.RecompressMaxDefer,
		metrics:            opts.Metrics,
		hits:               opts.Metrics.Lookups.WithLabelValues("narinfo", "hit"),
		ctx:                ctx,
		stop:               stop,
		flights:            make(map[string]*flight),
	}, nil
}

// Close cancels the downloads and lookups in progress and waits for them
// to clean up. Call it after the HTTP server has stopped, before closing
// the store (and the miss log).
func (c *Cache) Close() {
	c.mu.Lock()
	c.stop()
	c.mu.Unlock()
	c.wg.Wait()
}

// detach counts one piece of detached work in wg, unless the Cache is
// closed: then it reports false and the work must not start. Under mu,
// no Add can race with Close's Wait.
func (c *Cache) detach() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.detachLocked()
}

// detachLocked is detach for a caller that holds mu.
func (c *Cache) detachLocked() bool {
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	return true
}
