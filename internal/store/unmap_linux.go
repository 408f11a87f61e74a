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
// touched counted in the process's RSS. It runs inside a read
// transaction, during which bbolt cannot remap the file.
func (s *Store) unmapIndexPages() {
	s.db.View(func(tx *bolt.Tx) error {
		unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(tx.Size()), unix.MADV_DONTNEED)
		return nil
	})
}
