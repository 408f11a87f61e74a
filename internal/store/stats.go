package store

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Stats are the store's size.
type Stats struct {
	NarInfos int   // narinfos indexed
	NARs     int64 // NAR files on disk
	NARBytes int64 // their total size
}

// Stats returns the store's size, from counts kept in memory: a metrics
// scrape reads no index page.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{NarInfos: int(s.narInfos.Load()), NARs: s.narCount.Load(), NARBytes: s.narBytes.Load()}
	return st, ctx.Err()
}

// NARBytes is the total size of the NAR files indexed, kept in memory.
func (s *Store) NARBytes() int64 { return s.narBytes.Load() }

// ErrLowDisk means the cache dir's file system has less free space than
// asked for.
var ErrLowDisk = errors.New("store: low on disk space")

// Ready reports whether the store can serve and fill: the index answers,
// the temp dir takes a new file, and at least minFree bytes are free.
func (s *Store) Ready(ctx context.Context, minFree int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.View(func(tx *bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	// Counted as live, so verify does not call the probe's temp file a
	// stray.
	s.live.add("ready")
	defer s.live.done("ready")
	part, err := s.files.Create("ready")
	if err != nil {
		return fmt.Errorf("cache dir not writable: %w", err)
	}
	part.Discard()
	free, _, err := s.Disk()
	if err != nil {
		return err
	}
	if int64(free) < minFree {
		return fmt.Errorf("%w: %d bytes free, want %d", ErrLowDisk, free, minFree)
	}
	return nil
}

// NARCount is the number of NAR files indexed, kept in memory.
func (s *Store) NARCount() int64 { return s.narCount.Load() }
