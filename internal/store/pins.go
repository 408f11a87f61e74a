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

// Pin is a store path kept forever, with its closure: pinned by hand, or
// by warms of flake attributes for as long as one of the revisions they
// keep needs it (see WarmPins).
type Pin struct {
	Hash      string    `json:"hash"`
	StorePath string    `json:"store_path"` // as given: a full path, or just the hash
	Since     time.Time `json:"since"`
	// Warm lists the warmed revisions that need the path; a pin with none
	// (every pin made before warms existed), or Manual, was made by hand
	// and only unpin removes it.
	Warm   []WarmRef `json:"warm,omitempty"`
	Manual bool      `json:"manual,omitempty"`
}

// WarmRef is one warmed revision of a flake attribute that needs a pin.
type WarmRef struct {
	Attr   string    `json:"attr"` // FLAKEREF#ATTR
	Rev    string    `json:"rev"`
	Warmed time.Time `json:"warmed"` // when this revision was last warmed
}

// byHand reports whether p was pinned by hand.
func (p Pin) byHand() bool { return p.Manual || len(p.Warm) == 0 }

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
				if len(p.StorePath) <= len(prev.StorePath) && prev.byHand() {
					return nil
				}
				// A full path replaces a bare hash, a pin by hand one by
				// warms (which it outlives); the pin is as old as before.
				p.Since, p.Warm, p.Manual = prev.Since, prev.Warm, len(prev.Warm) > 0
				p.StorePath = longer(p.StorePath, prev.StorePath)
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

// longer is the longer of two names of one path: a full path beats a hash.
func longer(a, b string) string {
	if len(b) > len(a) {
		return b
	}
	return a
}
