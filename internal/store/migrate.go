package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyMigrating is the meta row of an upgrade from schema 1 under way: the
// last NAR row given its refill copy ("" before the first). Schema 2 is
// written in the upgrade's first transaction, so a binary that reads only
// schema 1 refuses the index from then on: it would change NAR rows
// without keeping the narage bucket and the totals.
var keyMigrating = []byte("migrating-to-2")

// upgradeBatch is how many NAR rows one upgrade transaction reads.
const upgradeBatch = 8192

// migrate upgrades an index of schema 1 (or finishes an upgrade a crash
// interrupted): every NAR row gets its refill copy (rows written before it
// was kept), in transactions of batch rows in key order, each moving the
// mark on, so after a crash the next Open goes on from the last one
// committed; then the age order and the totals are built from the rows in
// one transaction, which also drops the mark.
func (s *Store) migrate(batch int) error {
	defer s.unmapIndexPages()
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
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, _, err := buildNAROrder(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyMigrating)
	})
	if err != nil {
		return fmt.Errorf("upgrade index: %w", err)
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
	return meta.Put(keyMigrating, nil)
}

// migrateBatch gives the refill copy to the next batch rows after the one
// keyMigrating names; done once past the last.
func migrateBatch(tx *bolt.Tx, batch int) (done bool, err error) {
	meta := tx.Bucket(bucketMeta)
	after := meta.Get(keyMigrating)
	if after == nil {
		return true, nil
	}
	nars, srcs := tx.Bucket(bucketNAR), tx.Bucket(bucketNARSource)
	c := nars.Cursor()
	k, v := c.First()
	if len(after) > 0 {
		if k, v = c.Seek(after); k != nil && string(k) == string(after) {
			k, v = c.Next()
		}
	}
	type update struct{ k, v []byte }
	var ups []update
	var last []byte
	for n := 0; k != nil && n < batch; k, v = c.Next() {
		n++
		last = append(last[:0], k...)
		var r narRow
		if err := decodeNARRow(v, &r); err != nil {
			return false, fmt.Errorf("decode NAR row %s: %w", k, err)
		}
		if r.Refill != refillUnknown {
			continue
		}
		r.Refill = refillOf(srcs.Get(k))
		out, err := json.Marshal(r)
		if err != nil {
			return false, err
		}
		// Not while the cursor walks: a Put may split the page under it.
		ups = append(ups, update{append([]byte(nil), k...), out})
	}
	for _, u := range ups {
		if err := nars.Put(u.k, u.v); err != nil {
			return false, err
		}
	}
	if last == nil {
		return true, nil
	}
	return false, meta.Put(keyMigrating, last)
}
