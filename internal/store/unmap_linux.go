package store

import (
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// unmapIndexPages drops this process's mappings of the index's pages
// (MADV_DONTNEED on bbolt's shared, read-only mapping of the file): the
// pages stay in the page cache, and a later read maps them again from
// there. Work that reads most of a large bucket once, such as deleting a
// pass's 26,000 rows spread over the nar bucket's 15,000 pages, or a
// pruning round's walk of every narinfo, would otherwise leave all it
// touched counted in the process's RSS.
func (s *Store) unmapIndexPages() {
	s.db.View(func(tx *bolt.Tx) error {
		s.unmapIndexPagesIn(tx)
		return nil
	})
}

// unmapIndexPagesIn is unmapIndexPages inside a transaction of the
// caller's, for a long walk to call every so often: while a transaction
// is open bbolt cannot remap the file, so the mapping stays where it is.
func (s *Store) unmapIndexPagesIn(tx *bolt.Tx) {
	unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(tx.Size()), unix.MADV_DONTNEED)
}
