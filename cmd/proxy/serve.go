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
	"os"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// serve runs the cache until ctx ends (SIGINT/SIGTERM).
//
// The request path: server validates the name and maps errors to statuses;
// cache answers from store (bbolt index + NAR files) or, on a miss, asks the
// upstream group in priority order with hedging, checks the narinfo's
// signature, rewrites its URL to the NAR's stable local name and keeps it;
// a NAR miss is fetched once from the upstream that gave its narinfo and
// streamed to every client asking meanwhile while it lands on disk, and it
// becomes a cache entry only once its size and hash check out.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, fs, err := parseServeConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "Usage: nix-cache-proxy serve [flags]\n\nEvery flag can also be set by the environment variable %s<FLAG> (e.g. %s) or in the --config file.\n\n", envPrefix, envName("cache-dir"))
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: %v (see 'nix-cache-proxy serve -h')\n", err)
		return 1
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: %v\n", err)
		return 1
	}
	if err := runServer(ctx, cfg, log); err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy: %v\n", err)
		return 1
	}
	return 0
}

func runServer(ctx context.Context, cfg *serveConfig, log *slog.Logger) error {
	group, err := newUpstreams(cfg)
	if err != nil {
		return err
	}
	var keys []narinfo.PublicKey
	for _, k := range cfg.keys.values {
		pk, err := narinfo.ParsePublicKey(k)
		if err != nil {
			return fmt.Errorf("--trusted-public-key %q: %w", k, err)
		}
		keys = append(keys, pk)
	}
	// Listen before opening the store so a port in use fails fast and
	// leaves the cache dir untouched.
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()
	st, err := store.Open(cfg.cacheDir)
	if err != nil {
		return fmt.Errorf("--cache-dir %s: %w", cfg.cacheDir, err)
	}
	defer st.Close()
	negTTL := cfg.negativeTTL
	if negTTL == 0 {
		negTTL = -1
	}
	c, err := cache.New(cache.Options{
		Store:       st,
		Upstreams:   group,
		Keys:        keys,
		SkipVerify:  !cfg.verifySignatures,
		NegativeTTL: negTTL,
		Logger:      log,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := server.New(server.Config{
		Cache:               c,
		Priority:            cfg.priority,
		UpstreamErrorStatus: cfg.upstreamErrorStatus,
		Logger:              log,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: a multi-GB NAR to a slow client takes as long as
		// it takes; stalled clients are bounded by TCP keepalive.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	upstreamNames := make([]string, len(group.Clients()))
	for i, u := range group.Clients() {
		upstreamNames[i] = u.String()
	}
	log.Info("serving", "listen", ln.Addr().String(), "cache_dir", cfg.cacheDir,
		"upstreams", strings.Join(upstreamNames, " "), "verify_signatures", cfg.verifySignatures)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight responses cut at shutdown timeout", "err", err)
		srv.Close()
	}
	log.Info("stopped")
	return nil
}

func newUpstreams(cfg *serveConfig) (*upstream.Group, error) {
	opts := upstream.Options{Timeout: cfg.upstreamTimeout}
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
	return upstream.NewGroup(clients, 0), nil
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
