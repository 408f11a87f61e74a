package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestDerivedFaultsAndRebuild: verify's index check names each way the
// age order and the totals can be out of step with the NAR rows, and
// RebuildNAROrder mends them all, in the index and in memory.
func TestDerivedFaultsAndRebuild(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		corrupt func(tx *bolt.Tx) error
		want    string
	}{
		{"row missing from the order", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bucketNARAge).Cursor().First()
			return tx.Bucket(bucketNARAge).Delete(k)
		}, "missing from the age order"},
		{"order names a row that is gone", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketNARAge).Put(ageKey(nil, t0, []byte("gone.nar")), ageValue(1, refillYes))
		}, "gone.nar is in the age order"},
		{"size differs", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bucketNARAge).Cursor().First()
			return tx.Bucket(bucketNARAge).Put(k, ageValue(999, refillYes))
		}, "size or refill copy"},
		{"totals off", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyNARTotals, narTotals(7, 7))
		}, "totals say 7 files of 7 bytes, the rows 3 of 30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			for _, name := range []string{narName, "1" + narName[1:], "2" + narName[1:]} {
				commitNAR(t, s, name, 10)
			}
			must(t, s.db.Update(tc.corrupt))
			faults, err := s.CheckIndex(ctx)
			must(t, err)
			if len(faults) != 1 || !errors.Is(faults[0], ErrDerived) || !strings.Contains(faults[0].Error(), tc.want) {
				t.Fatalf("faults %v, want one ErrDerived saying %q", faults, tc.want)
			}
			if tc.name == "totals off" {
				// Memory mirrored the stored totals until now.
				s.counted(7-3, 7-30)
			}
			must(t, s.RebuildNAROrder(ctx))
			if faults, err := s.CheckIndex(ctx); err != nil || len(faults) != 0 {
				t.Errorf("after the rebuild: %v, %v", faults, err)
			}
			if s.NARCount() != 3 || s.NARBytes() != 30 {
				t.Errorf("totals in memory %d files of %d bytes, want 3 of 30", s.NARCount(), s.NARBytes())
			}
		})
	}
}
