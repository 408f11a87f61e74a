package server

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
)

// recorder captures what a handler did, for metrics and the access log. It
// keeps ReadFrom (sendfile) and Flush of the writer it wraps.
type recorder struct {
	http.ResponseWriter
	id      uint64
	route   string
	status  int
	bytes   int64
	aborted bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// setRoute relabels the request for metrics: one chi route serves both
// narinfos and listings.
func setRoute(w http.ResponseWriter, route string) {
	if rec, ok := w.(*recorder); ok {
		rec.route = route
	}
}

// withRequestID returns r with its id in the context, for the cache to log
// its upstream work under. Only the paths that may reach an upstream pay
// for the context.
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	if rec, ok := w.(*recorder); ok {
		return r.WithContext(reqid.With(r.Context(), rec.id))
	}
	return r
}

// requestIDs numbers requests for the logs; a counter costs nothing on the
// hit path, unlike a random id.
type requestIDs struct{ n atomic.Uint64 }

func (ids *requestIDs) next() uint64 { return ids.n.Add(1) }

// observe records a finished request: metrics always, an access log line
// at debug.
func (s *Server) observe(r *http.Request, rec *recorder, id uint64, start time.Time) {
	d := time.Since(start)
	code := codeLabel(rec.status)
	if rec.aborted {
		code = "aborted"
	}
	if rec.route == "narinfo" && code == "200" {
		// The bulk of the traffic: series resolved once, in New.
		s.narinfoOK.Inc()
		s.narinfoDuration.Observe(d.Seconds())
	} else {
		s.metrics.Requests.WithLabelValues(rec.route, code).Inc()
		s.metrics.RequestDuration.WithLabelValues(rec.route).Observe(d.Seconds())
	}
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.Uint64("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("route", rec.route), slog.String("status", code), slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", d), slog.String("remote", r.RemoteAddr))
	}
}

// codeLabel avoids formatting the common codes on every request.
func codeLabel(code int) string {
	switch code {
	case 0, http.StatusOK:
		return "200"
	case http.StatusPartialContent:
		return "206"
	case http.StatusNotModified:
		return "304"
	case http.StatusBadRequest:
		return "400"
	case http.StatusNotFound:
		return "404"
	case http.StatusInternalServerError:
		return "500"
	case http.StatusBadGateway:
		return "502"
	}
	return strconv.Itoa(code)
}
