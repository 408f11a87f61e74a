package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyMigrating is the meta row of an upgrade from schema 1 under way: the
// last NAR row done, after the totals so far (narTotals). Schema 2 is
// written in the upgrade's first transaction, so a binary that reads only
// schema 1 refuses the index from then on: it would change NAR rows
// without keeping the narage bucket and the totals.
var keyMigrating = []byte("migrating-to-2")

// upgradeBatch is how many NAR rows one upgrade transaction reads.
const upgradeBatch = 8192

// migrate upgrades an index of schema 1 (or finishes an upgrade a crash
// interrupted): every NAR row gets its refill copy (rows written before it
// was kept) and its place in the narage bucket, and the totals are
// counted, once. It goes in transactions of batch rows in key order;
// after a crash the next Open goes on from the last one committed.
func (s *Store) migrate(batch int) error {
	if err := s.db.Update(startMigration); err != nil {
		return fmt.Errorf("upgrade index: %w", err)
	}
	for done := false; !done; {
		err := s.db.Update(func(tx *bolt.Tx) error {
			var err error
			done, err = migrateBatch(tx, batch)
			return err
		})
		if err != nil {
			return fmt.Errorf("upgrade index: %w", err)
		}
	}
	return nil
}

// startMigration marks the index as schema 2 with an upgrade under way,
// unless it is marked so already.
func startMigration(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if string(meta.Get(keySchema)) == schemaVersion {
		return nil // under way, or done
	}
	if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
		return err
	}
	// Whatever the bucket holds (Open made it, empty) is built anew.
	if tx.Bucket(bucketNARAge) != nil {
		if err := tx.DeleteBucket(bucketNARAge); err != nil {
			return err
		}
	}
	if _, err := tx.CreateBucket(bucketNARAge); err != nil {
		return err
	}
	return meta.Put(keyMigrating, narTotals(0, 0))
}

// migrateBatch upgrades the next batch rows after the one keyMigrating
// names; done once the last is.
func migrateBatch(tx *bolt.Tx, batch int) (done bool, err error) {
	meta := tx.Bucket(bucketMeta)
	mark := meta.Get(keyMigrating)
	if mark == nil {
		return true, nil
	}
	if len(mark) < 16 {
		return false, fmt.Errorf("upgrade mark is %d bytes", len(mark))
	}
	files, size := readTotals(mark)
	after := mark[16:]
	nars, srcs, age := tx.Bucket(bucketNAR), tx.Bucket(bucketNARSource), tx.Bucket(bucketNARAge)
	c := nars.Cursor()
	k, v := c.First()
	if len(after) > 0 {
		if k, v = c.Seek(after); k != nil && string(k) == string(after) {
			k, v = c.Next()
		}
	}
	type update struct{ k, v []byte }
	var ups []update
	var last, key []byte
	for n := 0; k != nil && n < batch; k, v = c.Next() {
		n++
		var r narRow
		if err := decodeNARRow(v, &r); err != nil {
			return false, fmt.Errorf("decode NAR row %s: %w", k, err)
		}
		if r.Refill == refillUnknown {
			r.Refill = refillOf(srcs.Get(k))
			out, err := json.Marshal(r)
			if err != nil {
				return false, err
			}
			// Not while the cursor walks: a Put may split the page
			// under it.
			ups = append(ups, update{append([]byte(nil), k...), out})
		}
		key = ageKey(key[:0], r.lastUse(), k)
		if err := age.Put(key, ageValue(r.Size, r.Refill)); err != nil {
			return false, err
		}
		files++
		size += r.Size
		last = append(last[:0], k...)
	}
	end := k == nil
	for _, u := range ups {
		if err := nars.Put(u.k, u.v); err != nil {
			return false, err
		}
	}
	if end {
		if err := meta.Put(keyNARTotals, narTotals(files, size)); err != nil {
			return false, err
		}
		return true, meta.Delete(keyMigrating)
	}
	return false, meta.Put(keyMigrating, append(narTotals(files, size), last...))
}
