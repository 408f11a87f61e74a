package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MissCount returns the number of rows in the miss log.
func (s *Store) MissCount(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMisses); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// PruneMisses deletes the rows least recently seen until at most keep
// remain, and returns how many it deleted. The victims are chosen in a
// read transaction, which holds up no writer; the write transaction only
// deletes them, skipping a row seen again meanwhile.
func (s *Store) PruneMisses(ctx context.Context, keep int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	type seen struct {
		key  []byte
		last time.Time
	}
	var all []seen
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMisses)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			last, err := lastSeen(v)
			if err != nil {
				return fmt.Errorf("decode miss %s: %w", k, err)
			}
			all = append(all, seen{append([]byte(nil), k...), last})
			return nil
		})
	})
	if err != nil || len(all) <= keep {
		return 0, err
	}
	slices.SortFunc(all, func(a, b seen) int { return a.last.Compare(b.last) })
	victims := all[:len(all)-keep]
	removed := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		removed = 0
		b := tx.Bucket(bucketMisses)
		if b == nil {
			return nil
		}
		for _, v := range victims {
			row := b.Get(v.key)
			if row == nil {
				continue
			}
			if last, err := lastSeen(row); err != nil || !last.Equal(v.last) {
				continue // asked again since it was chosen (or unreadable: leave it)
			}
			if err := b.Delete(v.key); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	return removed, err
}

// lastSeen decodes only a row's LastSeen: pruning reads every row.
func lastSeen(row []byte) (time.Time, error) {
	var m struct {
		LastSeen time.Time `json:"last_seen"`
	}
	err := json.Unmarshal(row, &m)
	return m.LastSeen, err
}
