package store

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Disk returns the free (for unprivileged users) and total bytes of the
// file system holding the cache dir.
func (s *Store) Disk() (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	// Field types differ between Linux and Darwin; the conversions make one
	// expression compile on both.
	bsize := uint64(st.Bsize)
	return uint64(st.Bavail) * bsize, uint64(st.Blocks) * bsize, nil
}
