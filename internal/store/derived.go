package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// ErrDerived marks a fault of the rows derived from the NAR rows (the
// narage bucket, the totals): RebuildNAROrder mends it.
var ErrDerived = fmt.Errorf("store: NAR order or totals out of step with the NAR rows")

// maxDerivedFaults is how many faults checkNARDerived names before it
// only counts them.
const maxDerivedFaults = 20

// checkNARDerived compares the narage bucket and the totals with what the
// NAR rows say they should be, and returns each difference (wrapping
// ErrDerived). It reads both buckets whole: verify runs it on its copy of
// the index.
func checkNARDerived(tx *bolt.Tx) []error {
	var faults []error
	fault := func(format string, args ...any) {
		if len(faults) == maxDerivedFaults {
			faults = append(faults, fmt.Errorf("%w: more differences not listed", ErrDerived))
		}
		if len(faults) < maxDerivedFaults {
			faults = append(faults, fmt.Errorf("%w: "+format, append([]any{ErrDerived}, args...)...))
		}
	}
	want := map[string][]byte{} // age key -> value
	files, size, err := orderOfRows(tx, func(k []byte, err error) error {
		fault("NAR row %s unreadable: %v", k, err)
		return nil
	}, func(key, value []byte) {
		want[string(key)] = value
	})
	if err != nil {
		return append(faults, err)
	}
	err = tx.Bucket(bucketNARAge).ForEach(func(k, v []byte) error {
		_, name, _ := splitAgeKey(k)
		w, ok := want[string(k)]
		switch {
		case !ok:
			fault("%s is in the age order at a time its row does not have, or has no row", name)
		case !bytes.Equal(w, v):
			fault("%s's size or refill copy in the age order differs from its row", name)
		}
		delete(want, string(k))
		return nil
	})
	if err != nil {
		return append(faults, err)
	}
	for k := range want {
		_, name, _ := splitAgeKey([]byte(k))
		fault("%s is missing from the age order", name)
	}
	if f, s, err := readNARTotals(tx.Bucket(bucketMeta)); err != nil {
		fault("%v", err)
	} else if f != files || s != size {
		fault("totals say %d files of %d bytes, the rows %d of %d", f, s, files, size)
	}
	return faults
}

// RebuildNAROrder rebuilds the rows derived from the NAR rows (the narage
// bucket, the totals) from them, in one transaction: verify --repair's
// mend for ErrDerived. At 200,000 NARs it holds the index's write lock
// for about a second.
func (s *Store) RebuildNAROrder(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer s.unmapIndexPages()
	return s.db.Update(func(tx *bolt.Tx) error {
		// Unreadable, they are replaced all the same.
		oldFiles, oldSize, _ := readNARTotals(tx.Bucket(bucketMeta))
		files, size, err := buildNAROrder(tx)
		if err != nil {
			return err
		}
		// Memory mirrors the stored totals by the changes committed: it
		// was off by as much as they were.
		tx.OnCommit(func() { s.counted(files-oldFiles, size-oldSize) })
		return nil
	})
}

// buildNAROrder builds the narage bucket anew from the NAR rows and writes
// the totals, in tx, and returns them. The rows are put in key order, so
// the bucket's pages come out full (ageBucket): inserted in name order,
// at random places in the bucket, they left its pages 29 % full on
// average. Sorting holds every key in memory once: ~80 bytes a NAR.
func buildNAROrder(tx *bolt.Tx) (files, size int64, err error) {
	type row struct{ key, value []byte }
	var rows []row
	var arena []byte
	files, size, err = orderOfRows(tx, func(k []byte, err error) error {
		return fmt.Errorf("decode NAR row %s: %w", k, err)
	}, func(key, value []byte) {
		if len(arena) < len(key) {
			arena = make([]byte, 64<<10)
		}
		n := copy(arena, key)
		rows = append(rows, row{arena[:n:n], value})
		arena = arena[n:]
	})
	if err != nil {
		return 0, 0, err
	}
	slices.SortFunc(rows, func(a, b row) int { return bytes.Compare(a.key, b.key) })
	if tx.Bucket(bucketNARAge) != nil {
		if err := tx.DeleteBucket(bucketNARAge); err != nil {
			return 0, 0, err
		}
	}
	if _, err := tx.CreateBucket(bucketNARAge); err != nil {
		return 0, 0, err
	}
	age := ageBucket(tx)
	for _, r := range rows {
		if err := age.Put(r.key, r.value); err != nil {
			return 0, 0, err
		}
	}
	return files, size, tx.Bucket(bucketMeta).Put(keyNARTotals, narTotals(files, size))
}

// orderOfRows calls fn with the narage key (valid during the call) and
// value (fn's to keep) each NAR row calls for, and returns the totals the rows
// make; a row that does not decode goes to bad, whose error ends the walk.
func orderOfRows(tx *bolt.Tx, bad func(k []byte, err error) error, fn func(key, value []byte)) (files, size int64, err error) {
	var key []byte
	err = tx.Bucket(bucketNAR).ForEach(func(k, v []byte) error {
		var r narRow
		if err := decodeNARRow(v, &r); err != nil {
			return bad(k, err)
		}
		key = ageKey(key[:0], r.lastUse(), k)
		fn(key, ageValue(r.Size, r.Refill))
		files++
		size += r.Size
		return nil
	})
	return files, size, err
}
