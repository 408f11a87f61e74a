package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"
)

// The evicting bucket holds two kinds of records of NAR files whose rows
// are deleted and whose files are still to be removed:
//   - a name with no value: one file (verify's repairs; evictions before
//     batch records);
//   - a batch record: evictBatchPrefix and a sequence number, the value
//     the names of one eviction batch, each ended by '\n'. One key per
//     batch of 2,048 instead of one per file: writing and later deleting
//     a key per file was a B-tree insert and delete per file evicted, and
//     rewrote the bucket's pages at every batch.
//
// NAR names never start with a zero byte, so the two never collide.
var evictBatchPrefix = []byte{0}

// putEvictRecord records the names (each ended by '\n') of one batch.
func putEvictRecord(ev *bolt.Bucket, names []byte) error {
	if len(names) == 0 {
		return nil
	}
	seq, err := ev.NextSequence()
	if err != nil {
		return err
	}
	key := binary.BigEndian.AppendUint64(append([]byte(nil), evictBatchPrefix...), seq)
	if err := ev.Put(key, names); err != nil {
		return fmt.Errorf("record eviction: %w", err)
	}
	return nil
}

// evictRecordNames yields the names of the record k, v (views of them).
func evictRecordNames(k, v []byte) iter.Seq[string] {
	return func(yield func(string) bool) {
		if !bytes.HasPrefix(k, evictBatchPrefix) {
			yield(unsafeString(k))
			return
		}
		for line := range bytes.SplitSeq(v, []byte("\n")) {
			if len(line) > 0 && !yield(unsafeString(line)) {
				return
			}
		}
	}
}

// dropEvictRecords deletes the records of earlier evictions whose files
// are all removed by now (none left in s.removing).
func (s *Store) dropEvictRecords(ev *bolt.Bucket) error {
	s.rmMu.Lock()
	defer s.rmMu.Unlock()
	c := ev.Cursor()
	for k, v := c.First(); k != nil; {
		pending := false
		for name := range evictRecordNames(k, v) {
			if s.removing[name] {
				pending = true
				break
			}
		}
		if pending {
			k, v = c.Next()
			continue
		}
		if err := c.Delete(); err != nil {
			return err
		}
		k, v = c.Seek(k)
	}
	return nil
}
