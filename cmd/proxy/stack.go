package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fleet"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/misslog"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
	"github.com/prometheus/client_golang/prometheus"
)

// stack is an open cache with everything that works on it: what `serve`
// puts behind HTTP, and what the admin subcommands use directly when no
// server runs.
type stack struct {
	registry  *prometheus.Registry
	metrics   *metrics.Metrics
	upstreams *upstream.Group
	store     *store.Store
	misses    *misslog.Log
	cache     *cache.Cache
	evict     *evict.Evictor
	// fleetEvict keeps the --storage bucket within --max-size with the
	// other proxies on it; nil for a cache dir.
	fleetEvict *evict.Fleet
	storage    string // --storage; "" for the cache dir
	prefetch   *prefetch.Manager
	verify     *verify.Manager
	admin      *admin.Service
	warms      *warm.Board // what warms found, per attribute
	traffic    *upstream.Tally
	// leases and bucket are the --storage bucket's fills and operations;
	// nil for the cache dir.
	leases *fleet.Fills
	bucket *s3store.Bucket
	// receiver takes uploads; nil when they are off (set by uploads).
	receiver  *upload.Receiver
	keys      []narinfo.PublicKey
	secretKey *narinfo.SecretKey
}

// openStack opens the cache dir for cfg, which check has passed. Close it
// with close.
func openStack(cfg *serveConfig, log *slog.Logger) (s *stack, err error) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	traffic := new(upstream.Tally) // the status page's view of the upstreams
	group, err := newUpstreams(cfg, upstream.Observers(m, traffic), log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if s == nil {
			group.Close() // stops its probes
		}
	}()
	keys, err := parseKeys(cfg)
	if err != nil {
		return nil, err
	}
	secretKey := cfg.secretKey
	var storeOpts store.Options
	if secretKey != nil {
		sk := *secretKey
		// Kept before the key was configured, or unchecked: signed
		// only if it carries a trusted signature (see SignText).
		storeOpts.Present = func(text []byte) []byte { return narinfo.SignText(text, sk, keys) }
	}
	var (
		fills      cache.Fleet
		bucket     *s3store.Bucket
		leases     *fleet.Fills
		fleetEvict *evict.Fleet // set below, before anything is served
	)
	if cfg.storage != "" {
		bucket, err = openBucket(cfg, m)
		if err != nil {
			return nil, err
		}
		storeOpts.Files, storeOpts.Shared = bucket, bucket
		leases = fleet.New(bucket, fleet.Options{URL: cfg.advertiseURL, TTL: cfg.fillLeaseTTL, Metrics: m, Logger: log})
		fills = leases
		storeOpts.Accessed = func(name string, at time.Time) { fleetEvict.Accessed(name, at) }
	}
	st, err := store.OpenWith(cfg.cacheDir, storeOpts)
	if err != nil {
		return nil, fmt.Errorf("--cache-dir %s: %w", cfg.cacheDir, err)
	}
	if u := st.Upgraded(); u.To != "" {
		log.Info("index upgraded", "from_schema", u.From, "to_schema", u.To, "took", u.Took.Round(time.Millisecond), "nars", st.NARCount())
	}
	metrics.RegisterStore(reg, st)
	s = &stack{registry: reg, metrics: m, upstreams: group, traffic: traffic, leases: leases, bucket: bucket, store: st, keys: keys, secretKey: secretKey, storage: cfg.storage}
	s.misses = misslog.New(st, misslog.Options{Max: offWhenZero(cfg.missLogMax), Logger: log})
	evictCfg := evict.Config{MaxSize: cfg.maxSize, MinFree: cfg.minFree, KeepLatest: cfg.keepRules, EvictUploads: cfg.evictUploads,
		PruneAfter: offWhenZero(cfg.pruneAfter), Metrics: m, Logger: log}
	if cfg.storage != "" {
		// The cache dir holds only the index and the spool: its free
		// space is no reason to delete from the bucket (--min-free still
		// drives /readyz). The bucket's bound is the fleet's, kept by one
		// proxy at a time; this Evictor only writes the access times
		// into the index at each pass.
		evictCfg.MinFree, evictCfg.MaxSize, evictCfg.KeepLatest = 0, 0, nil
	}
	s.evict = evict.New(st, evictCfg)
	if cfg.storage != "" {
		fleetEvict = evict.NewFleet(st, bucket, evictLessor{leases}, evict.FleetConfig{
			MaxSize: cfg.maxSize, KeepLatest: cfg.keepRules, Grace: cfg.evictGrace, Interval: cfg.fleetInterval,
			Node: leases.Holder(), Prune: s.evict, Metrics: m, Logger: log,
		})
		s.fleetEvict = fleetEvict
	}
	var room cache.Room = s.evict
	if cfg.storage != "" {
		room = nil // nothing to reserve: the bucket is not this disk
	}
	s.cache, err = cache.New(cache.Options{
		Store:       st,
		Upstreams:   group,
		Keys:        keys,
		SkipVerify:  !cfg.verifySignatures,
		SecretKey:   secretKey,
		NegativeTTL: offWhenZero(cfg.negativeTTL),
		Fetch:       cache.FetchOptions{Connections: cfg.fetchConnections},
		Recompress:  cfg.recompressOn(),
		Misses:      s.misses,
		Room:        room,
		Fleet:       fills,
		Metrics:     m,
		Logger:      log,
	})
	if err != nil {
		return nil, errors.Join(err, s.close())
	}
	s.prefetch = prefetch.NewManager(s.cache, prefetch.Options{Concurrency: cfg.prefetchConcurrency, Metrics: m, Logger: log})
	metrics.RegisterPrefetch(reg, s.prefetch.Pending)
	s.verify = verify.NewManager(st, verify.Options{Logger: log, Protected: s.evict.Protected,
		Refetch: func(ctx context.Context, name string) error { return s.cache.EnsureNAR(ctx, name, nil) }})
	var gc admin.Collector = s.evict
	if s.fleetEvict != nil {
		gc = s.fleetEvict
	}
	s.warms = warm.NewBoard()
	metrics.RegisterWarms(reg, s.warms.List)
	s.admin = admin.NewService(st, s.misses, s.cache, s.prefetch, gc, s.verify, s.warms)
	return s, nil
}

// closeReporting closes s and, when that fails, logs why and joins it into
// *err: a cache dir that did not close cleanly (the miss log's last rows
// not written, the index not closed) must not pass for a clean exit.
func (s *stack) closeReporting(log *slog.Logger, err *error) {
	if cerr := s.close(); cerr != nil {
		log.Error("close the cache dir", "err", cerr)
		*err = errors.Join(*err, fmt.Errorf("close the cache dir: %w", cerr))
	}
}

// close stops everything in dependency order: jobs and downloads first,
// then the upstreams' probes, the miss log's last flush, then the index.
func (s *stack) close() error {
	if s.prefetch != nil {
		s.prefetch.Close()
	}
	if s.verify != nil {
		s.verify.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
	s.upstreams.Close()
	var errs []error
	if s.misses != nil {
		errs = append(errs, s.misses.Close())
	}
	errs = append(errs, s.store.Close())
	return errors.Join(errs...)
}

// evictLessor gives fleet eviction its lease, in eviction's words.
type evictLessor struct{ f *fleet.Fills }

func (l evictLessor) TryLease(ctx context.Context, name string) (context.Context, func(), error) {
	held, release, err := l.f.TryLease(ctx, name)
	if errors.Is(err, fleet.ErrHeld) {
		err = fmt.Errorf("%w: %w", evict.ErrLeaseHeld, err)
	}
	return held, release, err
}

// openBucket opens the --storage bucket, with credentials found the usual
// AWS way; the cache dir keeps the index and the spool of fills.
func openBucket(cfg *serveConfig, m *metrics.Metrics) (*s3store.Bucket, error) {
	loc, err := s3store.ParseURL(cfg.storage)
	if err != nil {
		return nil, fmt.Errorf("--storage: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := s3store.Open(ctx, loc, s3store.Options{SpoolDir: filepath.Join(cfg.cacheDir, "spool"), Observe: m.ObserveBucket})
	if err != nil {
		return nil, fmt.Errorf("--storage: %w", err)
	}
	return b, nil
}

// newUpstreams builds the upstream Group; log, if not nil, is told of
// each upstream's outages (once as one begins, once as it ends).
func newUpstreams(cfg *serveConfig, obs upstream.Observer, log *slog.Logger) (*upstream.Group, error) {
	if cfg.upstreamFailures < 1 {
		return nil, fmt.Errorf("--upstream-failure-threshold %d: must be at least 1", cfg.upstreamFailures)
	}
	if cfg.upstreamBackoffMax <= 0 {
		return nil, fmt.Errorf("--upstream-backoff-max %s: must be positive", cfg.upstreamBackoffMax)
	}
	opts := upstream.Options{
		Timeout:          cfg.upstreamTimeout,
		Observer:         obs,
		FailureThreshold: cfg.upstreamFailures,
		BackoffMax:       cfg.upstreamBackoffMax,
	}
	if cfg.netrcFile != "" {
		n, err := upstream.LoadNetrc(cfg.netrcFile)
		if err != nil {
			return nil, fmt.Errorf("--netrc-file: %w", err)
		}
		opts.Netrc = n
	}
	if len(cfg.upstreams.values) == 0 {
		return nil, errors.New("--upstream: at least one upstream is needed")
	}
	var clients []*upstream.Client
	for _, u := range cfg.upstreams.values {
		c, err := upstream.New(u, opts)
		if err != nil {
			return nil, fmt.Errorf("--upstream %q: %w", u, err)
		}
		clients = append(clients, c)
	}
	straggle := cfg.upstreamStraggle
	switch {
	case straggle < 0:
		return nil, fmt.Errorf("--upstream-straggle %s: must not be negative", straggle)
	case straggle == 0:
		straggle = upstream.NoStraggle
	}
	return upstream.NewGroupWith(clients, upstream.GroupOptions{Straggle: straggle, Logger: log}), nil
}

func parseKeys(cfg *serveConfig) ([]narinfo.PublicKey, error) {
	var keys []narinfo.PublicKey
	for _, k := range cfg.keys.values {
		pk, err := narinfo.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("--trusted-public-key %q: %w", k, err)
		}
		keys = append(keys, pk)
	}
	return keys, nil
}

// offWhenZero maps a flag's 0, which turns its thing off, to the negative
// value that does in the internal Options (whose 0 means the default).
func offWhenZero[T ~int | ~int64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
