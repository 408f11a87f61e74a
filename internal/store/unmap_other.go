//go:build !linux

package store

import bolt "go.etcd.io/bbolt"

// unmapIndexPages is a no-op where the mapped pages of the index are not
// dropped by hand (see unmap_linux.go).
func (s *Store) unmapIndexPages() {}

func (s *Store) unmapIndexPagesIn(*bolt.Tx) {}
