// Package upstream is the HTTP client the proxy uses to talk to its upstream
// binary caches (cache.nixos.org, cachix, …). It maps the upstream's answers
// onto two outcomes callers must tell apart: "the upstream does not have it"
// (ErrNotFound) and "the upstream could not answer" (ErrUnavailable), so an
// outage is never recorded as a miss.
package upstream

import "errors"

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
)

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
