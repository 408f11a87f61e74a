package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WarmPins pins paths for revision rev of the flake attribute attr, and
// keeps the pins of attr's keep most recently warmed revisions only: in
// the same transaction, the older revisions' claims are dropped, and a
// pin left with no claim that was not also made by hand is deleted (its
// closure becomes ordinary eviction fodder). A path two attributes (or
// revisions) need stays pinned while either keeps it. It returns the pins
// deleted. keep < 1 keeps one revision.
func (s *Store) WarmPins(ctx context.Context, attr, rev string, paths map[string]string, keep int, now time.Time) ([]Pin, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	keep = max(keep, 1)
	now = now.UTC()
	var dropped, added []Pin
	err := s.db.Update(func(tx *bolt.Tx) error {
		dropped, added = nil, nil
		b, err := tx.CreateBucketIfNotExists(bucketPins)
		if err != nil {
			return err
		}
		pins := map[string]*Pin{}
		if err := b.ForEach(func(k, v []byte) error {
			var p Pin
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode pin %s: %w", k, err)
			}
			pins[string(k)] = &p
			return nil
		}); err != nil {
			return err
		}
		changed := map[string]bool{}
		for hash, path := range paths {
			p := pins[hash]
			if p == nil {
				p = &Pin{Hash: hash, StorePath: path, Since: now}
				pins[hash] = p
				added = append(added, *p)
			} else if len(p.Warm) == 0 {
				p.Manual = true // pinned by hand before: it stays so
			}
			p.StorePath = longer(p.StorePath, path)
			p.Warm = slices.DeleteFunc(p.Warm, func(r WarmRef) bool { return r.Attr == attr && r.Rev == rev })
			p.Warm = append(p.Warm, WarmRef{Attr: attr, Rev: rev, Warmed: now})
			changed[hash] = true
		}
		kept := keptRevisions(pins, attr, keep)
		for hash, p := range pins {
			n := len(p.Warm)
			p.Warm = slices.DeleteFunc(p.Warm, func(r WarmRef) bool { return r.Attr == attr && !kept[r.Rev] })
			if len(p.Warm) == n {
				continue
			}
			changed[hash] = true
			if len(p.Warm) == 0 && !p.Manual {
				dropped = append(dropped, *p)
				delete(pins, hash)
				delete(changed, hash)
				if err := b.Delete([]byte(hash)); err != nil {
					return err
				}
			}
		}
		for hash := range changed {
			p := pins[hash]
			if len(p.Warm) == 0 {
				p.Manual = false // by hand alone again: the old form
			}
			row, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(hash), row); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.shared != nil {
		// The node evicting for the fleet keeps what is pinned there.
		for _, p := range added {
			if err := s.shared.PutPin(ctx, p); err != nil {
				return dropped, fmt.Errorf("record pin in shared storage: %w", err)
			}
		}
		for _, p := range dropped {
			if err := s.shared.DeletePin(ctx, p.Hash); err != nil {
				return dropped, fmt.Errorf("unpin in shared storage: %w", err)
			}
		}
	}
	slices.SortFunc(dropped, func(a, b Pin) int { return strings.Compare(a.StorePath, b.StorePath) })
	return dropped, nil
}

// keptRevisions are attr's keep most recently warmed revisions.
func keptRevisions(pins map[string]*Pin, attr string, keep int) map[string]bool {
	last := map[string]time.Time{}
	for _, p := range pins {
		for _, r := range p.Warm {
			if r.Attr == attr && r.Warmed.After(last[r.Rev]) {
				last[r.Rev] = r.Warmed
			}
		}
	}
	revs := make([]string, 0, len(last))
	for r := range last {
		revs = append(revs, r)
	}
	slices.SortFunc(revs, func(a, b string) int {
		if c := last[b].Compare(last[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	kept := map[string]bool{}
	for _, r := range revs[:min(len(revs), keep)] {
		kept[r] = true
	}
	return kept
}
