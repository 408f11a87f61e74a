package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/gcfloor"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serve runs the cache until ctx ends (SIGINT/SIGTERM); SIGHUP reloads
// its configuration (see reload.go).
//
// The request path: server validates the name and maps errors to statuses;
// cache answers from store (bbolt index + NAR files) or, on a miss, asks the
// upstream group in priority order with hedging, checks the narinfo's
// signature, rewrites its URL to the NAR's stable local name and keeps it;
// a NAR miss is fetched once from the upstream that gave its narinfo and
// streamed to every client asking meanwhile while it lands on disk, and it
// becomes a cache entry only once its size and hash check out.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if slices.Contains(args, "--help-all") || slices.Contains(args, "-help-all") {
		serveHelp(stdout, newServeFlags("serve", &serveConfig{}), true)
		return 0
	}
	cfg, fs, err := parseServeConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		serveHelp(stdout, fs, false)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: %v (see 'nix-cache-proxy serve --help-all')\n", err)
		return 1
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: %v\n", err)
		return 1
	}
	if os.Getenv("GOGC") == "" {
		// Hits leave garbage on a heap of a few MiB: without a floor the
		// collector would run every few dozen milliseconds under load
		// (see package gcfloor). GOGC set by the user wins.
		defer gcfloor.Start(gcFloor)()
	}
	// Listen before opening the store so a port in use fails fast and
	// leaves the cache dir untouched.
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: --listen: %v\n", err)
		return 1
	}
	shared := shareListener(ln)
	defer shared.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	load := func() (*serveConfig, *slog.Logger, error) {
		next, _, err := parseServeConfig(args, os.Getenv)
		if err != nil {
			return nil, nil, err
		}
		nextLog, err := newLogger(stderr, next.logLevel, next.logFormat)
		return next, nextLog, err
	}
	// Each round is one generation of the cache; a reload ends it and
	// starts the next with the new configuration, or, if that one fails
	// to start, with the last one that did.
	var good *serveConfig
	var goodLog *slog.Logger
	for {
		next, nextLog, served, err := runServer(ctx, cfg, log, shared, hup, load)
		if err != nil && !served && good != nil {
			log.Error("the reloaded configuration failed to start; starting again with the previous one", "err", err)
			cfg, log, good = good, goodLog, nil
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "nix-cache-proxy: %v\n", err)
			return 1
		}
		if next == nil {
			return 0
		}
		good, goodLog = cfg, log
		cfg, log = next, nextLog
	}
}

// gcFloor is the smallest heap goal of the server: the collector's cycles
// stay about a second apart at tens of thousands of narinfo hits a second,
// and peak RSS well under 100 MiB.
const gcFloor = 32 << 20

// runServer runs one generation of the cache on shared until ctx ends
// (next is nil) or a SIGHUP on hup brings a configuration that load
// returns and reloadable accepts (next is it, and the generation has
// drained). served says whether it got as far as serving: an error before
// that leaves the socket to the previous configuration.
func runServer(ctx context.Context, cfg *serveConfig, log *slog.Logger, shared *sharedListener, hup <-chan os.Signal, load reloader) (next *serveConfig, nextLog *slog.Logger, served bool, err error) {
	s, err := openStack(cfg, log)
	if err != nil {
		return nil, nil, false, err
	}
	defer s.closeReporting(log, &err)
	metricsHandler := promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
	uploads, stopUploads, err := s.uploads(cfg, log)
	if err != nil {
		return nil, nil, false, err
	}
	defer stopUploads()
	h, err := server.New(server.Config{
		Upload:         uploads,
		Cache:          s.cache,
		Metrics:        s.metrics,
		MetricsHandler: metricsHandler,
		Ready: func(ctx context.Context) error {
			if err := s.store.Ready(ctx, cfg.minFree); err != nil {
				return err
			}
			return s.evict.Ready()
		},
		Degraded:            s.upstreams.Down,
		Admin:               admin.Handler(s.admin, admin.HandlerOptions{Token: cfg.adminToken, Hosts: listenHosts(cfg.listen), Logger: log}),
		StatusPage:          s.statusPage(log),
		Priority:            cfg.priority,
		UpstreamErrorStatus: cfg.upstreamErrorStatus,
		Logger:              log,
	})
	if err != nil {
		return nil, nil, false, err
	}
	limits := clientLimitsOf(cfg)
	var nofile syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile) == nil {
		if n, lowered := fitConns(limits.maxConns, nofile.Cur); lowered {
			log.Warn("--max-connections lowered to fit the open-file limit", "max_connections", n, "nofile", nofile.Cur)
			limits.maxConns = n
		}
	}
	if cfg.advertiseMDNS {
		adv, err := advertiseCache(cfg, shared.ln.Addr(), log)
		if err != nil {
			return nil, nil, false, err
		}
		defer adv.Close()
	}
	srv, bounded := newHTTPServer(h, shared.view(), limits, log)
	metrics.RegisterConnections(s.registry, bounded.Open, limits.maxConns)
	upstreamNames := make([]string, len(s.upstreams.Clients()))
	for i, u := range s.upstreams.Clients() {
		upstreamNames[i] = u.String()
	}
	storage := cfg.storage
	if storage == "" {
		storage = cfg.cacheDir
	}
	log.Info("serving", "listen", shared.ln.Addr().String(), "cache_dir", cfg.cacheDir, "storage", storage,
		"upstreams", strings.Join(upstreamNames, " "), "verify_signatures", cfg.verifySignatures,
		"max_size", cfg.maxSize, "min_free", cfg.minFree)

	// Eviction runs in the background from the start: a cache already past
	// its bound (a lowered --max-size) comes back under it, after a line
	// saying what that takes.
	logOverBound(ctx, s, cfg, log)
	evictCtx, stopEvict := context.WithCancel(context.Background())
	evicted := make(chan struct{})
	go func() { defer close(evicted); s.evict.Run(evictCtx) }()
	defer func() { stopEvict(); <-evicted }()
	if s.fleetEvict != nil {
		fleetEvicted := make(chan struct{})
		go func() { defer close(fleetEvicted); s.fleetEvict.Run(evictCtx) }()
		defer func() { stopEvict(); <-fleetEvicted }()
	}

	if err := prefetchPins(ctx, s, cfg.pins.values, log); err != nil {
		if ctx.Err() != nil {
			return nil, nil, true, nil // told to stop while starting: a clean stop, not a failure
		}
		return nil, nil, false, err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		prefetch.NewWatcher(s.store, s.cache, s.prefetch, prefetch.WatchOptions{
			Recheck: offWhenZero(cfg.missRecheck), RecheckMax: cfg.missRecheckMax, Logger: log,
		}).Run(watchCtx)
	}()
	defer func() { stopWatch(); <-watched }()
	stopFollow := s.follow(cfg.warms, log)
	defer stopFollow()

	errc := make(chan error, 3)
	for _, side := range []struct {
		flag, addr string
		h          http.Handler
	}{
		{"--metrics-listen", cfg.metricsListen, metricsOnly(metricsHandler)},
		{"--pprof-listen", cfg.pprofListen, pprofOnly()},
	} {
		if side.addr == "" {
			continue
		}
		closeSide, err := serveSide(side.addr, side.h, errc)
		if err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", side.flag, err)
		}
		defer closeSide()
		log.Info("serving "+strings.TrimPrefix(side.flag, "--"), "listen", side.addr)
	}
	var fresh unread
	srv.ConnState = fresh.hook
	serving := make(chan error, 1)
	go func() { serving <- srv.Serve(bounded) }()
	for {
		select {
		case err := <-serving:
			return nil, nil, true, fmt.Errorf("serve: %w", err)
		case err := <-errc:
			srv.Close()
			return nil, nil, true, fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			log.Info("shutting down", "timeout", cfg.shutdownTimeout)
		case <-hup:
			var err error
			next, nextLog, err = reloadable(cfg, load)
			if err != nil {
				log.Error("reload refused; the running configuration stays", "err", err)
				continue
			}
			log.Info("reloading: draining, then starting again with the configuration read now", "timeout", cfg.shutdownTimeout)
		}
		break
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	// Stop taking connections (the next generation, or none, takes them
	// from the socket), let those taken send their requests, then drain.
	bounded.Close()
	<-serving
	fresh.wait(time.Second)
	if err = srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight responses cut at shutdown timeout", "err", err)
		srv.Close()
		err = nil
	}
	if next != nil {
		log.Info("drained for the reload")
		return next, nextLog, true, nil
	}
	log.Info("stopped")
	return nil, nil, true, nil
}

// serveSide serves h on its own listener at addr, for the optional
// metrics and profiling listeners; its Serve error goes to errc.
func serveSide(addr string, h http.Handler, errc chan<- error) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- srv.Serve(ln) }()
	return srv.Close, nil
}

// pprofOnly serves Go's profiles under /debug/pprof/, for --pprof-listen:
// never on the main listener, where the LAN could reach them.
func pprofOnly() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}

// metricsOnly serves /metrics and nothing else, for --metrics-listen.
func metricsOnly(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}

// prefetchPins records the --pin paths as pins and starts one prefetch job
// for every pin and its closure, so pinned paths are on disk soon after
// start whatever happened while the server was down.
func prefetchPins(ctx context.Context, s *stack, extra []string, log *slog.Logger) error {
	for _, p := range extra {
		h, _ := prefetch.HashOf(p)
		if err := s.store.PutPin(ctx, store.Pin{Hash: h, StorePath: p, Since: time.Now().UTC()}); err != nil {
			return fmt.Errorf("--pin %s: %w", p, err)
		}
	}
	pins, err := s.store.Pins(ctx)
	if err != nil || len(pins) == 0 {
		return err
	}
	req := prefetch.Request{Closure: true}
	for _, p := range pins {
		req.Paths = append(req.Paths, p.Hash)
	}
	st, err := s.prefetch.Start(req)
	if err != nil {
		return err
	}
	log.Info("prefetching pinned paths", "pins", len(pins), "job", st.ID)
	return nil
}

// listenHosts returns the host of the listen address, a name the admin
// CLI may dial (it defaults to http:// + --listen), for the admin API's
// Host check; a wildcard or an IP needs no entry.
func listenHosts(listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" || net.ParseIP(host) != nil {
		return nil
	}
	return []string{host}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
