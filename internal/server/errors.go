package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
)

// Errors of the server itself, answered by answerFor.
var (
	// errBadName: the name can never exist, so it reaches neither the disk
	// nor an upstream (400).
	errBadName = errors.New("invalid name")
	// errNoCredentials: a PUT without the write token (401).
	errNoCredentials = errors.New("uploads need the write token (netrc password, or Authorization: Bearer)")
	// errBadCredentials: a PUT with the wrong write token (403).
	errBadCredentials = errors.New("wrong write token")
	// errUploadsOff: a PUT while uploads are off (405).
	errUploadsOff = errors.New("uploads are off: start the proxy with --write-token-file to accept `nix copy --to`")
)

// answer is how the server answers an error: a status and a body, at most
// one header, and one log line (none when msg is "").
type answer struct {
	status        int
	body          string
	header, value string
	level         slog.Level
	msg           string
	attrs         []any // the log line's, after its request id
}

// answerFor maps err to its answer, the one place an error becomes a
// status; it writes nothing.
func (s *Server) answerFor(r *http.Request, err error) answer {
	path := r.URL.Path
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, errBadName):
		return answer{status: http.StatusBadRequest, body: "invalid name: " + path}
	case errors.Is(err, errUploadsOff):
		a := uploadRefused(r, http.StatusMethodNotAllowed, err)
		a.header, a.value = "Allow", s.allowed(path)
		return a
	case errors.Is(err, errNoCredentials):
		a := uploadRefused(r, http.StatusUnauthorized, err)
		a.header, a.value = "WWW-Authenticate", `Basic realm="nix-cache-proxy uploads"`
		return a
	case errors.Is(err, errBadCredentials), errors.Is(err, upload.ErrUnsigned):
		return uploadRefused(r, http.StatusForbidden, err)
	case errors.As(err, &tooBig):
		return uploadRefused(r, http.StatusRequestEntityTooLarge, fmt.Errorf("upload larger than %d bytes", tooBig.Limit))
	case errors.Is(err, upload.ErrUnsupported):
		return uploadRefused(r, http.StatusUnsupportedMediaType, err)
	case errors.Is(err, upload.ErrRejected):
		return uploadRefused(r, http.StatusBadRequest, err)
	case errors.Is(err, cache.ErrNotFound):
		a := answer{status: http.StatusNotFound, body: "not found",
			level: slog.LevelDebug, msg: "not found", attrs: []any{"path", path, "reason", err}}
		if errors.Is(err, cache.ErrRefused) {
			// Still a 404, so Nix moves on, but not a silent one: an
			// upstream had it and its answer was refused.
			a.header, a.value = ErrorHeader, cache.Reason(err)
		}
		return a
	case errors.Is(err, cache.ErrUnavailable), errors.Is(err, cache.ErrVerify),
		errors.Is(err, context.DeadlineExceeded):
		reason := cache.Reason(err)
		level := slog.LevelWarn
		if cache.Skipped(err) {
			level = slog.LevelDebug // an outage, logged when it began
		}
		return answer{status: s.errStatus, body: "upstream unavailable: " + reason, header: ErrorHeader, value: reason,
			level: level, msg: "upstream failure", attrs: []any{"path", path, "err", reason}}
	default:
		return answer{status: http.StatusInternalServerError, body: "internal error",
			level: slog.LevelError, msg: "internal error", attrs: []any{"path", path, "err", err}}
	}
}

// uploadRefused answers a refused PUT: status, and err's reason as the body.
func uploadRefused(r *http.Request, status int, err error) answer {
	return answer{status: status, body: cache.Reason(err), level: slog.LevelWarn, msg: "upload refused",
		attrs: []any{"method", r.Method, "path", r.URL.Path, "status", status, "err", err}}
}

// writeError answers err as answerFor says, and logs it.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, id uint64, err error) {
	a := s.answerFor(r, err)
	if a.msg != "" {
		s.log.Log(r.Context(), a.level, a.msg, append([]any{"request_id", id}, a.attrs...)...)
	}
	if a.header != "" {
		w.Header().Set(a.header, a.value)
	}
	http.Error(w, a.body, a.status)
}
