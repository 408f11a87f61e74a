//go:build !linux

package store

// unmapIndexPages is a no-op where the mapped pages of the index are not
// dropped by hand (see unmap_linux.go).
func (s *Store) unmapIndexPages() {}
