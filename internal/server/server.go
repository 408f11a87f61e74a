// Package server maps the Nix binary-cache protocol's HTTP routes onto the
// cache: it validates every name before anything else happens, and turns the
// cache's errors into the status codes Nix clients act on.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Zero values mean defaults.
type Config struct {
	Cache *cache.Cache
	// Admin, if not nil, is mounted under /_/ (see package admin).
	Admin http.Handler
	// Metrics are updated per request; nil keeps them unexported.
	Metrics *metrics.Metrics
	// MetricsHandler, if not nil, answers GET /metrics.
	MetricsHandler http.Handler
	// Ready, if not nil, answers GET /readyz: nil means ready; an error
	// is a 503 that names it.
	Ready func(context.Context) error
	// Degraded, if not nil, says why the proxy is ready but degraded (no
	// upstream answers: hits are served, misses fail): /readyz then
	// answers 200 "degraded: <why>", so a load balancer keeps a cache
	// that still serves hits. nil means not degraded.
	Degraded func() error
	// StatusPage, if not nil, answers GET and HEAD /.
	StatusPage http.Handler
	// Priority is nix-cache-info's Priority; default 30, ahead of
	// cache.nixos.org's 40.
	Priority int
	// UpstreamErrorStatus answers a lookup that failed only because the
	// upstreams are down or erroring: 404 (default) lets Nix move on to its
	// next substituter, 502 makes the failure visible.
	UpstreamErrorStatus int
	// Upload, if not nil, accepts `nix copy --to` (PUT); without it a PUT
	// answers 405 saying how to turn uploads on.
	Upload *UploadConfig
	Logger *slog.Logger
}

// Server is the HTTP front of the cache.
type Server struct {
	cache     *cache.Cache
	log       *slog.Logger
	errStatus int
	cacheInfo []byte
	handler   http.Handler
	metrics   *metrics.Metrics
	ids       requestIDs
	recorders sync.Pool // of *recorder, one per request in flight
	narinfo   http.HandlerFunc
	router    chi.Routes
	uploads   bool // PUT routes store; else they answer 405

	narinfoOK       prometheus.Counter
	narinfoDuration prometheus.Observer
}

// ErrorHeader carries the one-line reason of an upstream failure.
const ErrorHeader = "X-Nix-Cache-Proxy-Error"

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Cache == nil {
		return nil, errors.New("server: Cache is required")
	}
	if cfg.Priority == 0 {
		cfg.Priority = 30
	}
	if cfg.UpstreamErrorStatus == 0 {
		cfg.UpstreamErrorStatus = http.StatusNotFound
	}
	if err := CheckUpstreamErrorStatus(cfg.UpstreamErrorStatus); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	s := &Server{
		cache:     cfg.Cache,
		log:       cfg.Logger,
		errStatus: cfg.UpstreamErrorStatus,
		metrics:   cfg.Metrics,
		cacheInfo: []byte("StoreDir: " + narinfo.StoreDir + "\nWantMassQuery: 1\nPriority: " + strconv.Itoa(cfg.Priority) + "\n"),
	}
	r := chi.NewRouter()
	r.Get("/nix-cache-info", s.handle("nix-cache-info", s.serveCacheInfo))
	r.Head("/nix-cache-info", s.handle("nix-cache-info", s.serveCacheInfo))
	// Peers on the same shared storage join this proxy's NAR fills here
	// (internal/fleet). Like /nar/ it needs no credentials: it sends only
	// what /nar/<file> would, and never starts a download.
	r.Get("/_/fill/{file}", s.handle("fill", s.serveFill))
	if cfg.Admin != nil {
		r.Mount("/_", cfg.Admin)
	}
	if cfg.MetricsHandler != nil {
		r.Method(http.MethodGet, "/metrics", cfg.MetricsHandler)
	}
	if cfg.StatusPage != nil {
		r.Method(http.MethodGet, "/", cfg.StatusPage)
		r.Method(http.MethodHead, "/", cfg.StatusPage)
	}
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			if err := cfg.Ready(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("not ready: " + cache.Reason(err) + "\n"))
				return
			}
		}
		if cfg.Degraded != nil {
			if err := cfg.Degraded(); err != nil {
				w.Write([]byte("degraded: " + cache.Reason(err) + "\n"))
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	r.Get("/nar/{file}", s.handle("nar", s.serveNAR))
	r.Head("/nar/{file}", s.handle("nar", s.serveNAR))
	r.Get("/log/{name}", s.handle("log", s.serveLog))
	r.Get("/realisations/{file}", s.handle("realisation", s.serveRealisation))
	r.Get("/build-trace-v2/{drv}/{file}", s.handle("realisation", s.serveBuildTrace))
	s.mountUploads(r, cfg.Upload)
	r.Get("/{file}", s.handle("narinfo", s.serveTopLevel))
	r.Head("/{file}", s.handle("narinfo", s.serveTopLevel))
	r.NotFound(s.handle("other", func(http.ResponseWriter, *http.Request) error { return cache.ErrNotFound }))
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", s.allowed(req.URL.Path))
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	})
	s.handler, s.router = r, r
	s.uploads = cfg.Upload != nil && cfg.Upload.Uploads != nil
	s.narinfo = s.handle("narinfo", s.serveNarInfo)
	s.narinfoOK = s.metrics.Requests.WithLabelValues("narinfo", "200")
	s.narinfoDuration = s.metrics.RequestDuration.WithLabelValues("narinfo")
	s.recorders.New = func() any { return new(recorder) }
	return s, nil
}

// ServeHTTP implements http.Handler. Narinfo requests, the bulk of a
// client's traffic, skip the router: its per-request context and route
// state cost more than the lookup they lead to.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) == 1+32+len(".narinfo") && p[0] == '/' && p[33:] == ".narinfo" &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.narinfo(w, r)
		return
	}
	s.handler.ServeHTTP(w, r)
}

// handle adapts a handler that returns an error: every error is mapped to
// a status in answerFor, once, and logged in writeError, once, with the
// request's id; and every request is counted under route.
func (s *Server) handle(route string, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := s.recorders.Get().(*recorder)
		*rec = recorder{ResponseWriter: w, route: route, id: s.ids.next()}
		id := rec.id
		defer func() {
			s.observe(r, rec, id, start)
			*rec = recorder{}
			s.recorders.Put(rec)
		}()
		err := h(rec, r)
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			// The client left; there is no one to answer.
		case errors.Is(err, cache.ErrAborted):
			s.log.Warn("response aborted", "request_id", id, "path", r.URL.Path, "err", err)
			rec.aborted = true
			// The body is already partly sent with a 200: only cutting the
			// connection tells the client it is incomplete.
			panic(http.ErrAbortHandler)
		default:
			s.writeError(rec, r, id, err)
		}
	}
}

// allowed is the Allow header (RFC 9110 requires it on a 405) for path:
// the methods the router has a route for, less PUT when uploads are off.
// chi passes the allowed methods only to its own 405 handler, so ask it.
func (s *Server) allowed(path string) string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		if (m != http.MethodPut || s.uploads) && s.router.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return strings.Join(out, ", ")
}

// CheckUpstreamErrorStatus reports whether code may be Config's
// UpstreamErrorStatus: 404, or a gateway error Nix reports as one.
func CheckUpstreamErrorStatus(code int) error {
	switch code {
	case http.StatusNotFound, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil
	}
	return fmt.Errorf("upstream error status %d is not one of 404, 502, 503, 504", code)
}
