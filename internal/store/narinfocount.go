package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyNarInfoCount is the meta row holding how many rows the narinfo bucket
// has. Counting the bucket instead (Bucket.Stats) reads every page of it:
// on a million narinfos that maps ~1.3 GiB of the index into the process
// on every metrics scrape.
var keyNarInfoCount = []byte("narinfo-count")

// countNarInfos writes the narinfo count into an index that lacks it (a new
// one, or one from before the count was kept). It is the one time the
// bucket is walked; every writer keeps the count after that.
func countNarInfos(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keyNarInfoCount) != nil {
		return nil
	}
	n := tx.Bucket(bucketNarInfo).Stats().KeyN
	return meta.Put(keyNarInfoCount, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// loadNarInfoCount reads the persisted count into memory, at Open.
func (s *Store) loadNarInfoCount() error {
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyNarInfoCount)
		if len(v) != 8 {
			return fmt.Errorf("index: narinfo count is %d bytes, want 8", len(v))
		}
		s.narInfos.Store(int64(binary.BigEndian.Uint64(v)))
		return nil
	})
}

// addNarInfos adds delta to the narinfo count in tx, the transaction that
// adds or deletes the rows, and to the count in memory once tx commits. A
// delta rather than the total goes to memory: bbolt runs commit handlers
// after releasing the writer lock, so two commits' handlers may run in
// either order.
func (s *Store) addNarInfos(tx *bolt.Tx, delta int64) error {
	if delta == 0 {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyNarInfoCount)
	if len(v) != 8 {
		return fmt.Errorf("index: narinfo count is %d bytes, want 8", len(v))
	}
	n := int64(binary.BigEndian.Uint64(v)) + delta
	if err := meta.Put(keyNarInfoCount, binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
		return fmt.Errorf("narinfo count: %w", err)
	}
	tx.OnCommit(func() { s.narInfos.Add(delta) })
	return nil
}

// putNarInfo stores a narinfo row in tx, counting it unless it replaces one.
func (s *Store) putNarInfo(tx *bolt.Tx, hash string, text []byte) error {
	b := tx.Bucket(bucketNarInfo)
	added := b.Get([]byte(hash)) == nil
	if err := b.Put([]byte(hash), text); err != nil {
		return fmt.Errorf("index narinfo %s: %w", hash, err)
	}
	if added {
		return s.addNarInfos(tx, 1)
	}
	return nil
}
