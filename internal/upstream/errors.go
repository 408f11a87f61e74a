// Package upstream is the HTTP client the proxy uses to talk to its upstream
// binary caches (cache.nixos.org, cachix, …). It maps the upstream's answers
// onto two outcomes callers must tell apart: "the upstream does not have it"
// (ErrNotFound) and "the upstream could not answer" (ErrUnavailable), so an
// outage is never recorded as a miss.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
)

// Sentinel errors. Errors returned by this package wrap one of them; match
// with errors.Is.
var (
	// ErrNotFound means the upstream answered 404, 403 or 410, which Nix
	// reads as "not here".
	ErrNotFound = errors.New("upstream: not found")
	// ErrUnavailable means the upstream could not give an answer: connection
	// error, timeout, stalled body, 5xx or any other unexpected status.
	ErrUnavailable = errors.New("upstream: unavailable")
	// ErrForeignURL means a narinfo's URL points at a host other than the
	// upstream's own, which the proxy refuses to follow.
	ErrForeignURL = errors.New("upstream: NAR URL points at another host")
	// ErrRangeRefused means a ranged GET was not answered with exactly the
	// range asked for (a 200 with the whole NAR, a wrong Content-Range).
	ErrRangeRefused = errors.New("upstream: range refused")
	// ErrSkipped means the upstream was not asked at all: its breaker is
	// open after failures in a row. It comes with ErrUnavailable.
	ErrSkipped = errors.New("upstream: skipped while down")
	// ErrStraggler means the Group gave up on an upstream that had not
	// answered when every other had, within the straggle bound. It counts as
	// the upstream failing, so a hung upstream trips its breaker after a few
	// lookups instead of a few full timeouts.
	ErrStraggler = errors.New("no answer while every other upstream had answered")
)

// Skipped reports whether err is an outage already reported: every
// upstream that could not answer was skipped because its breaker is open
// (the Group logs an outage once, when the breaker opens, and once when
// it closes). Callers log such a failure quietly, not once per request.
func Skipped(err error) bool {
	var g *groupError
	if !errors.As(err, &g) {
		return errors.Is(err, ErrSkipped)
	}
	skipped := false
	for _, r := range g.reasons {
		if errors.Is(r, ErrUnavailable) {
			if !errors.Is(r, ErrSkipped) {
				return false
			}
			skipped = true
		}
	}
	return skipped
}

// Unexported causes, used to tell our own deadlines apart from the caller's
// cancellation when a request fails.
var (
	errTimeout = errors.New("upstream: timeout")
	errStall   = errors.New("upstream: stalled")
)

// failure is an error about one upstream. Its message is short and names the
// upstream ("upstream https://x: 502 Bad Gateway") while it still wraps the
// sentinel (kind) and the underlying cause, if any.
type failure struct {
	upstream string
	reason   string
	kind     error
	cause    error
}

func (f *failure) Error() string {
	if f.upstream == "" {
		return f.reason
	}
	return "upstream " + f.upstream + ": " + f.reason
}

// Unwrap exposes both the sentinel and the cause, so errors.Is works for
// ErrUnavailable as well as for, say, io.ErrUnexpectedEOF.
func (f *failure) Unwrap() []error {
	if f.cause == nil {
		return []error{f.kind}
	}
	return []error{f.kind, f.cause}
}

// Unavailable returns an error that wraps ErrUnavailable and cause and
// reads "reason: cause", for a caller that gives up on the upstreams
// itself (its own deadline): its message need not repeat ErrUnavailable's.
func Unavailable(reason string, cause error) error {
	return &failure{kind: ErrUnavailable, cause: cause, reason: reason + ": " + cause.Error()}
}

// reasonOf is err's message without the upstream's name, when err is one
// of our failures (which name it already).
func reasonOf(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.reason
	}
	return err.Error()
}

// requestError turns an error from Do or from reading a body into our
// vocabulary. parent is the caller's context, ctx the one carrying our own
// deadline as its cause: the caller's cancellation is passed through as
// is, our timeouts and network failures become ErrUnavailable.
func (c *Client) requestError(parent, ctx context.Context, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("upstream %s: %w", c.name, perr)
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errTimeout):
		return &failure{c.name, fmt.Sprintf("timeout after %s", c.timeout), ErrUnavailable, err}
	case errors.Is(cause, errStall):
		return &failure{c.name, fmt.Sprintf("stalled: no data for %s", c.stall), ErrUnavailable, err}
	}
	reason := err.Error()
	// url.Error repeats the method and full URL; the upstream is named
	// already, so keep the message short.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		reason = uerr.Err.Error()
	}
	return &failure{c.name, reason, ErrUnavailable, err}
}

// statusError maps a non-200 status: 404, 403 and 410 are misses as Nix
// reads them; anything else means no usable answer.
func (c *Client) statusError(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone:
		return &failure{c.name, resp.Status, ErrNotFound, nil}
	default:
		return &failure{c.name, resp.Status, ErrUnavailable, nil}
	}
}

// htmlError refuses a 200 that is an HTML page: no binary cache file is
// one (narinfos are text/x-nix-narinfo, NARs octet streams), but a captive
// portal, a login page or a web server's index at a mistyped URL is. Such
// an answer is the upstream failing, not a miss, and saying so beats a
// parse error about "<!DOCTYPE html>".
func (c *Client) htmlError(resp *http.Response) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "text/html" && mt != "application/xhtml+xml" {
		return nil
	}
	return &failure{c.name, "answered with an HTML page (" + mt + "), not a binary cache file: a captive portal or a wrong URL?", ErrUnavailable, nil}
}
