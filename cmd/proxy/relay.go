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
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/netwatch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const relayUsage = "Usage: nix-cache-proxy relay --cache URL [--cache URL]... [flags]"

// relayCommand is `nix-cache-proxy relay`: a laptop's loopback substituter
// that forwards to the first reachable LAN cache and answers itself while
// none is (see package relay and docs/relay.md).
//
// The request path: Nix → relay (loopback) → the first cache probing
// found reachable → the response streamed back. Nothing is stored,
// nothing signed; Nix checks signatures against its own keys.
func relayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var caches stringList
	fs.Var(&caches, "cache", "a LAN cache's `URL` (http://host:port); repeatable, most preferred first")
	listen := fs.String("listen", "127.0.0.1:5576", "loopback `address` to serve Nix on")
	priority := fs.Int("priority", 30, "Priority of the nix-cache-info answered while no cache was ever reached (a reached cache's own is answered after)")
	connectTimeout := fs.Duration("connect-timeout", time.Second, "bound on connecting to a cache; off the LAN, a request waits at most this long once")
	checkInterval := fs.Duration("check-interval", 5*time.Second, "how often the cache in use is probed")
	backoffMax := fs.Duration("backoff-max", 3*time.Second, "longest wait between probes of an unreachable cache")
	discover := fs.Bool("discover", false, "also use caches advertised on the LAN over DNS-SD/Bonjour (_nix-cache._tcp; serve --advertise-mdns), after the --cache ones")
	var keys stringList
	fs.Var(&keys, "trusted-public-key", "`NAME:BASE64`: with --discover, use only caches that advertise one of these keys; repeatable (Nix checks signatures either way)")
	discoverInterval := fs.Duration("discover-interval", 30*time.Second, "with --discover, how often the LAN is asked (and at once after a network change)")
	logLevel := fs.String("log-level", "info", "`level` of the least important lines logged: debug (a line per request: forwarded or answered itself), info, warn or error")
	logFormat := fs.String("log-format", "text", "`format` of the log lines: text or json")
	fail := func(err error) int {
		fmt.Fprintf(stderr, "nix-cache-proxy relay: %v\n%s\n", err, relayUsage)
		return 2
	}
	if err := parseInterspersed(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "%s\n\nForwards Nix's requests to the first reachable LAN cache; answers narinfo 404\nat once while none is. List http://%s as a substituter.\n\n", relayUsage, *listen)
		writeFlags(stdout, fs, nil)
		return 0
	} else if err != nil {
		return fail(err)
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := relay.Options{
		Caches:         caches.values,
		Priority:       *priority,
		ConnectTimeout: *connectTimeout,
		CheckInterval:  *checkInterval,
		BackoffMax:     *backoffMax,
		Metrics:        reg,
		Logger:         log,
	}
	var disc *relayDiscovery
	if *discover {
		disc = &relayDiscovery{trusted: keys.values, interval: *discoverInterval, log: log}
	}
	if err := runRelay(ctx, opts, disc, *listen, reg, log); err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy relay: %v\n", err)
		return 1
	}
	return 0
}

func runRelay(ctx context.Context, opts relay.Options, disc *relayDiscovery, listen string, reg *prometheus.Registry, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := netwatch.Watch(ctx)
	switch {
	case errors.Is(err, netwatch.ErrUnsupported):
		log.Info("network changes not reported here; probing on a timer only")
	case err != nil:
		log.Warn("network changes not watched; probing on a timer only", "err", err)
	default:
		opts.Changes = changes
	}
	if disc != nil {
		// Each network change goes both to the relay and to discovery.
		var browseChanges <-chan struct{}
		if opts.Changes != nil {
			opts.Changes, browseChanges = tee(ctx, opts.Changes)
		}
		found := make(chan []string)
		opts.Discovered = found
		go disc.run(ctx, found, browseChanges)
	}
	r, err := relay.New(opts)
	if err != nil {
		return err
	}
	defer r.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ok; forwarding to %s\n", orSelf(r.Reachable()))
	})
	mux.Handle("/", r)
	srv, bounded := newHTTPServer(mux, ln, clientLimits{readHeader: 10 * time.Second, idle: 2 * time.Minute, maxHeaderBytes: 64 << 10}, log)
	probed := make(chan error, 1)
	go func() { probed <- r.Run(ctx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(bounded) }()
	log.Info("relay serving", "listen", ln.Addr().String(), "caches", opts.Caches)
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	cancel()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	srv.Shutdown(shutdown)
	<-probed
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func orSelf(cache string) string {
	if cache == "" {
		return "none (answering itself)"
	}
	return cache
}
