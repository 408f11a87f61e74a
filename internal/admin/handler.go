package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// Prefix is where the admin API lives. "_" is not in Nix base32 and no
// protocol path starts with it, so it cannot collide with the cache.
const Prefix = "/_"

// HandlerOptions configure the admin API.
type HandlerOptions struct {
	// Token, when set, is required as "Authorization: Bearer <token>" and
	// lets any client in; when empty only loopback clients are answered,
	// and only when they name this machine in Host (see guard).
	Token string
	// Hosts are Host names answered without a token besides loopback
	// addresses and localhost: the host part of the listen address.
	Hosts []string
	// BodyTimeout bounds the arrival of a request body; default 30s.
	BodyTimeout time.Duration
	Logger      *slog.Logger
}

// Handler returns the admin API for s, to be mounted at Prefix.
func Handler(s *Service, opts HandlerOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{svc: s, log: opts.Logger}
	r := chi.NewRouter()
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 30 * time.Second
	}
	r.Use(bodyDeadline(opts.BodyTimeout), newGuard(opts.Token, opts.Hosts).wrap, readBody)
	r.Get("/misses", h.json(h.misses))
	r.Get("/prefetch", h.json(func(r *http.Request) (any, error) { return s.Jobs(r.Context()) }))
	r.Post("/prefetch", h.json(h.startPrefetch))
	r.Get("/prefetch/{id}", h.json(h.job))
	r.Get("/pins", h.json(func(r *http.Request) (any, error) { return s.Pins(r.Context()) }))
	r.Post("/pins", h.json(h.pin))
	r.Delete("/pins", h.json(h.unpin))
	r.Post("/check", h.json(h.check))
	r.Post("/locate", h.json(h.locate))
	r.Post("/warm", h.json(h.warm))
	r.Get("/warm", h.json(func(r *http.Request) (any, error) { return s.WarmStatus(r.Context()) }))
	r.Post("/gc", h.json(h.gc))
	r.Post("/delete", h.json(h.delete))
	r.Get("/kept", h.json(func(r *http.Request) (any, error) { return s.Kept(r.Context()) }))
	r.Get("/verify", h.json(func(r *http.Request) (any, error) { return s.VerifyJobs(r.Context()) }))
	r.Post("/verify", h.json(h.startVerify))
	r.Get("/verify/{id}", h.json(h.verifyJob))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin endpoint: "+r.Method+" "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", allowed(r, req))
		writeError(w, http.StatusMethodNotAllowed, "method not allowed: "+req.Method+" "+req.URL.Path)
	})
	return r
}

// allowed is the Allow header a 405 must carry (RFC 9110): the methods
// routes has for req's path. chi tells only its own 405 handler, so ask.
func allowed(routes chi.Routes, req *http.Request) string {
	path := req.URL.Path
	if rc := chi.RouteContext(req.Context()); rc != nil && rc.RoutePath != "" {
		path = rc.RoutePath // below the mount point
	}
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if routes.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return strings.Join(out, ", ")
}

type handler struct {
	svc *Service
	log *slog.Logger
}

// PathsRequest is the body of pin and unpin.
type PathsRequest struct {
	Paths []string `json:"paths"`
}

func (h *handler) misses(r *http.Request) (any, error) {
	var f MissFilter
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, badRequestf("since: want a duration like 24h, got %q", v)
		}
		f.Since = d
	}
	f.Outcome = r.URL.Query().Get("outcome")
	return h.svc.Misses(r.Context(), f)
}

// job answers GET /_/prefetch/{id}; with ?wait=DURATION it answers when
// the job finishes or that long has passed.
func (h *handler) job(r *http.Request) (any, error) {
	id := chi.URLParam(r, "id")
	v := r.URL.Query().Get("wait")
	if v == "" {
		return h.svc.Job(r.Context(), id)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return nil, badRequestf("wait: want a duration like 10s, got %q", v)
	}
	return h.svc.WaitJob(r.Context(), id, d)
}

func (h *handler) startPrefetch(r *http.Request) (any, error) {
	var req PrefetchRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Prefetch(r.Context(), req)
}

func (h *handler) pin(r *http.Request) (any, error) {
	var req PathsRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Pin(r.Context(), req.Paths)
}

func (h *handler) unpin(r *http.Request) (any, error) {
	var req PathsRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return struct{}{}, h.svc.Unpin(r.Context(), req.Paths)
}

func (h *handler) check(r *http.Request) (any, error) {
	var req CheckRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Check(r.Context(), req)
}

func (h *handler) locate(r *http.Request) (any, error) {
	var req LocateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Locate(r.Context(), req)
}

func (h *handler) warm(r *http.Request) (any, error) {
	var req WarmRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Warm(r.Context(), req)
}

func (h *handler) startVerify(r *http.Request) (any, error) {
	var req verify.Request
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Verify(r.Context(), req)
}

// verifyJob answers GET /_/verify/{id}: with ?wait=DURATION it answers once
// the job has a problem past ?from=N (default 0) or has finished, or that
// long has passed; its problems list starts at from.
func (h *handler) verifyJob(r *http.Request) (any, error) {
	q := r.URL.Query()
	from := 0
	if v := q.Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, badRequestf("from: want a count, got %q", v)
		}
		from = n
	}
	wait := time.Duration(0)
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, badRequestf("wait: %w", err)
		}
		wait = d
	}
	return h.svc.WaitVerify(r.Context(), chi.URLParam(r, "id"), wait, from)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequestf("request body: %w", err)
	}
	return nil
}

// json adapts a function returning a value or an error to JSON responses,
// mapping errors to statuses in one place.
func (h *handler) json(fn func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		switch {
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(v)
		case errors.Is(err, context.Canceled):
		case errors.Is(err, ErrBadRequest):
			writeError(w, http.StatusBadRequest, err.Error())
		case errors.Is(err, ErrNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrConflict):
			writeError(w, http.StatusConflict, err.Error())
		default:
			h.log.Error("admin request failed", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, err.Error())
		}
	}
}

// apiError is the body of every admin error response.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: msg})
}
