package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketPins = []byte("pins")

// Pin is a store path kept forever, with its closure.
type Pin struct {
	Hash      string    `json:"hash"`
	StorePath string    `json:"store_path"` // as given: a full path, or just the hash
	Since     time.Time `json:"since"`
}

// PutPin pins a path; pinning it again keeps the first Since. With shared
// storage the pin is recorded there first, so it holds for every node.
func (s *Store) PutPin(ctx context.Context, p Pin) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.shared != nil {
		if err := s.shared.PutPin(ctx, p); err != nil {
			return fmt.Errorf("record pin in shared storage: %w", err)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPins)
		if err != nil {
			return err
		}
		if old := b.Get([]byte(p.Hash)); old != nil {
			var prev Pin
			if json.Unmarshal(old, &prev) == nil {
				if len(p.StorePath) <= len(prev.StorePath) {
					return nil
				}
				// A full path replaces a bare hash; the pin is as old as before.
				p.Since = prev.Since
			}
		}
		row, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return b.Put([]byte(p.Hash), row)
	})
}

// DeletePin unpins a path; unpinning a path not pinned is ErrNotFound.
// With shared storage a pin another node made is unpinned too.
func (s *Store) DeletePin(ctx context.Context, hash string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sharedErr := ErrNotFound
	if s.shared != nil {
		sharedErr = s.shared.DeletePin(ctx, hash)
		if errors.Is(sharedErr, fs.ErrNotExist) {
			sharedErr = ErrNotFound
		} else if sharedErr != nil {
			return fmt.Errorf("unpin in shared storage: %w", sharedErr)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		if b == nil || b.Get([]byte(hash)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(hash))
	})
	if errors.Is(err, ErrNotFound) && sharedErr == nil {
		return nil // pinned on another node
	}
	return err
}

// Pins lists the pinned paths, oldest first.
func (s *Store) Pins(ctx context.Context) ([]Pin, error) {
	out, err := listRows[Pin](ctx, s, bucketPins)
	slices.SortFunc(out, func(a, b Pin) int { return a.Since.Compare(b.Since) })
	return out, err
}
