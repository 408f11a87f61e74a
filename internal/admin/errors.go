package admin

import (
	"errors"
	"fmt"
)

// Sentinel errors of the admin API. Errors wrapping them read as their
// reason alone ("\"foo\" is not a store path ..."): the status they map to
// already says "bad request", and the CLI prints the reason as is.
var (
	// ErrBadRequest means the request is malformed or names no valid thing (400).
	ErrBadRequest = errors.New("admin: bad request")
	// ErrNotFound means the request names something the server lacks (404).
	ErrNotFound = errors.New("admin: not found")
	// ErrConflict means the request clashes with work in progress (a verify
	// job while another runs).
	ErrConflict = errors.New("admin: conflict")
	// ErrNoServer means nothing listens at the server URL, so the caller may
	// open the cache directory itself.
	ErrNoServer = errors.New("admin: no server is running there")
)

// kindError is an error that matches kind (ErrBadRequest, ErrNotFound) and
// whatever err wraps, but whose text is err's alone.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

func badRequest(err error) error { return &kindError{ErrBadRequest, err} }

func badRequestf(format string, args ...any) error {
	return badRequest(fmt.Errorf(format, args...))
}

func notFound(err error) error { return &kindError{ErrNotFound, err} }

func notFoundf(format string, args ...any) error {
	return notFound(fmt.Errorf(format, args...))
}

func conflict(err error) error { return &kindError{ErrConflict, err} }
