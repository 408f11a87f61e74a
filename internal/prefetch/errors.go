package prefetch

import "errors"

// Sentinel errors of the package. Errors wrapping ErrBadPath read as the
// reason alone, in the user's terms: they reach the command line as they are.
var (
	// ErrBadPath means an argument is neither a store path nor a hash part.
	ErrBadPath = errors.New("prefetch: not a store path or hash")
	// ErrNoJob means no job has that id (finished jobs are kept for a while).
	ErrNoJob = errors.New("prefetch: no such job")
)
