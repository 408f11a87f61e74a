//go:build !linux && !darwin

package store

// bootID is unknown here: notes are saved only with fsync.
func bootID() string { return "" }
