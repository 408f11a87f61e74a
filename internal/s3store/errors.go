package s3store

import "errors"

// Sentinel errors of the package; match them with errors.Is.
var (
	// ErrConflict means a conditional write lost: the object exists
	// (If-None-Match) or changed (If-Match).
	ErrConflict = errors.New("s3store: conditional write lost")
	// ErrURL means a --storage URL is not one this package understands.
	ErrURL = errors.New("s3store: bad storage URL")
)
