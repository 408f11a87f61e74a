package store

import (
	"context"
	"io"
	"io/fs"
)

// NARFiles holds the NAR files themselves, apart from the index: a local
// directory today (DirFiles), an object store later. The writer, eviction
// and verify reach files only through it, so another backend is one type.
//
// Names are NAR names the narinfo package validated. A file that does not
// exist is an error wrapping fs.ErrNotExist.
type NARFiles interface {
	// Create starts writing the file name. Nothing is visible under name
	// until the PartFile's Commit returns nil.
	Create(name string) (PartFile, error)
	// Open opens the committed file name for reading.
	Open(name string) (NARFile, error)
	// Stat returns the size of the committed file name.
	Stat(name string) (int64, error)
	// Remove deletes the committed file name. Readers that hold it open
	// keep reading it to its end.
	Remove(name string) error
	// List calls fn for every committed file, in no particular order,
	// and stops at fn's first error, which it returns.
	List(ctx context.Context, fn func(name string, size int64) error) error
}

// NARFile is an open NAR file. For a directory it is an *os.File, which
// net/http sends with sendfile.
type NARFile interface {
	io.ReadSeekCloser
	Stat() (fs.FileInfo, error)
}

// PartFile is a NAR file being written. One that is also an io.WriterAt
// (safe for concurrent writes of disjoint ranges, like *os.File) lets a
// download land in several ranges at once.
type PartFile interface {
	io.Writer
	// Sync makes what was written so far durable.
	Sync() error
	// OpenPartial opens the file as written so far, for a client that
	// follows the download; the handle stays readable after Commit or
	// Discard.
	OpenPartial() (NARFile, error)
	// Commit makes the file durable and visible under its name, and
	// returns its size.
	Commit() (int64, error)
	// Discard drops the file. It is a no-op after Commit.
	Discard() error
}

// removalSyncer is a NARFiles whose removals are durable only once
// SyncRemoved returns: a directory's, where a removed name is gone for
// good only when its directory is synced.
type removalSyncer interface {
	SyncRemoved(names []string) error
}

// syncRemoved makes the removal of names durable, where files needs it.
func syncRemoved(files NARFiles, names []string) error {
	if rs, ok := files.(removalSyncer); ok && len(names) > 0 {
		return rs.SyncRemoved(names)
	}
	return nil
}
