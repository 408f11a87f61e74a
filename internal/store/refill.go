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
	// refillUnknown is a row written before the copy was kept: Open
	// upgrades those (upgradeRefill), and a reader that still meets one
	// reads the source row.
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
func putSource(tx *bolt.Tx, name string, row []byte) error {
	if err := tx.Bucket(bucketNARSource).Put([]byte(name), row); err != nil {
		return fmt.Errorf("index NAR source %s: %w", name, err)
	}
	return setRefill(tx, name, refillOf(row))
}

// setRefill sets the NAR row of name's copy to r; no row, nothing to do.
func setRefill(tx *bolt.Tx, name string, r refill) error {
	b := tx.Bucket(bucketNAR)
	v := b.Get([]byte(name))
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
	row.Refill = r
	out, err := json.Marshal(row)
	if err != nil {
		return err
	}
	return b.Put([]byte(name), out)
}

// upgradeBatch is how many rows one upgrade transaction rewrites.
const upgradeBatch = 8192

// upgradeRefill gives every NAR row written before the copy was kept its
// copy, at Open, in transactions of batch rows in key order (a crash
// halfway leaves the rest to the next Open). n is how many rows lack it,
// as counted: with none, it reads nothing.
func (s *Store) upgradeRefill(n int64, batch int) error {
	var after []byte
	for n > 0 {
		done := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			nars, srcs := tx.Bucket(bucketNAR), tx.Bucket(bucketNARSource)
			c := nars.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && string(k) == string(after) {
					k, v = c.Next()
				}
			}
			type update struct{ k, v []byte }
			var ups []update
			for ; k != nil && done < batch; k, v = c.Next() {
				var row narRow
				if err := decodeNARRow(v, &row); err != nil {
					return fmt.Errorf("decode NAR row %s: %w", k, err)
				}
				after = append(after[:0], k...)
				if row.Refill != refillUnknown {
					continue
				}
				row.Refill = refillOf(srcs.Get(k))
				out, err := json.Marshal(row)
				if err != nil {
					return err
				}
				// Not while the cursor walks: a Put may split the page
				// under it.
				ups = append(ups, update{append([]byte(nil), k...), out})
				done++
			}
			for _, u := range ups {
				if err := nars.Put(u.k, u.v); err != nil {
					return err
				}
			}
			if k == nil {
				n = 0 // the end: whatever was counted is done
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("upgrade NAR rows: %w", err)
		}
		n -= int64(done)
	}
	return nil
}
