package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// refill is a NAR row's copy of whether its NAR can be fetched again once
// evicted. An eviction pass considers the ~27,000 oldest of 200,000 files;
// reading their source rows (~400-byte JSON spread over a million keys)
// mapped 200 MiB of the index into the process. The copy is written in
// the same transaction as the source row or the NAR row, whichever comes
// last, so the two never disagree, even across a crash.
type refill uint8

const (
	// refillUnknown is a row written before the copy was kept (schema
	// 1): the upgrade to schema 2 gives every row its copy (migrate).
	refillUnknown refill = iota
	refillYes
	// refillNo: an upload, or no source row at all (an upload not yet
	// claimed). Never evicted.
	refillNo
)

// refillOf is what a source row (nil: none) says of its NAR. A row that
// cannot be read says no: a NAR is dropped only when it surely comes back.
func refillOf(src []byte) refill {
	if src == nil {
		return refillNo
	}
	ok, fast := fastRefillable(src)
	if !fast {
		var s NARSource
		if json.Unmarshal(src, &s) != nil {
			return refillNo
		}
		ok = s.Refillable()
	}
	if ok {
		return refillYes
	}
	return refillNo
}

// putSource writes the source row of the NAR name and, if the NAR is on
// disk, the copy its row keeps.
func (s *Store) putSource(tx *bolt.Tx, name string, row []byte) error {
	if err := tx.Bucket(bucketNARSource).Put([]byte(name), row); err != nil {
		return fmt.Errorf("index NAR source %s: %w", name, err)
	}
	return s.setRefill(tx, name, refillOf(row))
}

// setRefill sets the NAR row of name's copy to r; no row, nothing to do.
func (s *Store) setRefill(tx *bolt.Tx, name string, r refill) error {
	n := s.narRows(tx)
	v := n.get([]byte(name))
	if v == nil {
		return nil
	}
	var row narRow
	if err := decodeNARRow(v, &row); err != nil {
		return fmt.Errorf("decode NAR row %s: %w", name, err)
	}
	if row.Refill == r {
		return nil
	}
	changed := row
	changed.Refill = r
	if err := n.replace([]byte(name), row, changed); err != nil {
		return err
	}
	return n.done()
}
