package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketMisses = []byte("misses")

// Outcomes of a miss: what happened the last time a path was not in the
// cache when asked for.
const (
	OutcomeFetched       = "fetched"        // an upstream had it; it is cached now
	OutcomeNotFound      = "not-found"      // no upstream had it
	OutcomeUpstreamError = "upstream-error" // upstreams could not be asked
)

// Miss is the record of a store path that was asked for and not answered
// from the local cache.
type Miss struct {
	Hash      string    `json:"hash"`
	StorePath string    `json:"store_path,omitempty"` // known once an upstream had it
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Outcome   string    `json:"outcome"`
	Upstream  string    `json:"upstream,omitempty"` // which upstream had it
	Bytes     int64     `json:"bytes,omitempty"`    // NAR file bytes fetched
	// NextCheck and CheckInterval schedule the re-asking of upstreams about
	// a not-found path; zero when no check is scheduled.
	NextCheck     time.Time     `json:"next_check,omitzero"`
	CheckInterval time.Duration `json:"check_interval,omitempty"`
}

// MissEvent is one thing that happened to a path, merged into its Miss row.
type MissEvent struct {
	Hash      string
	At        time.Time
	Asked     bool   // a client asked for it (counts)
	Outcome   string // "" leaves the outcome as it was
	StorePath string
	Upstream  string
	Bytes     int64
}

// merge applies e to m.
func (m *Miss) merge(e MissEvent) {
	if m.Hash == "" {
		m.Hash, m.FirstSeen = e.Hash, e.At
	}
	if e.Asked {
		m.Count++
		if e.At.After(m.LastSeen) {
			m.LastSeen = e.At
		}
	}
	if m.LastSeen.IsZero() {
		m.LastSeen = e.At
	}
	if e.Outcome != "" {
		m.Outcome = e.Outcome
		if e.Outcome != OutcomeNotFound {
			m.NextCheck, m.CheckInterval = time.Time{}, 0
		}
	}
	if e.StorePath != "" {
		m.StorePath = e.StorePath
	}
	if e.Upstream != "" {
		m.Upstream = e.Upstream
	}
	if e.Bytes != 0 {
		m.Bytes = e.Bytes
	}
}

// RecordMisses merges events into the miss log in one transaction, then
// prunes the rows least recently seen until at most max remain (max <= 0
// keeps everything).
func (s *Store) RecordMisses(ctx context.Context, events []MissEvent, max int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMisses)
		if err != nil {
			return err
		}
		for _, e := range events {
			var m Miss
			if row := b.Get([]byte(e.Hash)); row != nil {
				if err := json.Unmarshal(row, &m); err != nil {
					return fmt.Errorf("decode miss %s: %w", e.Hash, err)
				}
			}
			m.merge(e)
			if err := putMiss(b, &m); err != nil {
				return err
			}
		}
		// Stats counts only the rows committed before this transaction, so
		// add the events (each at most one new row) for an upper bound.
		if max > 0 && b.Stats().KeyN+len(events) > max {
			return pruneMisses(b, max)
		}
		return nil
	})
}

// UpdateMiss changes the row for hash with fn; a missing row is ErrNotFound.
func (s *Store) UpdateMiss(ctx context.Context, hash string, fn func(*Miss)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMisses)
		if err != nil {
			return err
		}
		row := b.Get([]byte(hash))
		if row == nil {
			return ErrNotFound
		}
		var m Miss
		if err := json.Unmarshal(row, &m); err != nil {
			return fmt.Errorf("decode miss %s: %w", hash, err)
		}
		fn(&m)
		return putMiss(b, &m)
	})
}

func putMiss(b *bolt.Bucket, m *Miss) error {
	row, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put([]byte(m.Hash), row)
}

func pruneMisses(b *bolt.Bucket, max int) error {
	type seen struct {
		key  []byte
		last time.Time
	}
	var all []seen
	err := b.ForEach(func(k, v []byte) error {
		var m Miss
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("decode miss %s: %w", k, err)
		}
		all = append(all, seen{append([]byte(nil), k...), m.LastSeen})
		return nil
	})
	if err != nil {
		return err
	}
	if len(all) <= max {
		return nil
	}
	slices.SortFunc(all, func(a, b seen) int { return a.last.Compare(b.last) })
	for _, s := range all[:len(all)-max] {
		if err := b.Delete(s.key); err != nil {
			return err
		}
	}
	return nil
}

// Misses returns every row of the miss log, most recently seen first.
func (s *Store) Misses(ctx context.Context) ([]Miss, error) {
	out, err := listRows[Miss](ctx, s, bucketMisses)
	slices.SortFunc(out, func(a, b Miss) int { return b.LastSeen.Compare(a.LastSeen) })
	return out, err
}

// listRows decodes every JSON row of bucket. It never returns nil on
// success, so an empty list encodes as [] rather than null.
func listRows[T any](ctx context.Context, s *Store, bucket []byte) ([]T, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []T{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var row T
			if err := json.Unmarshal(v, &row); err != nil {
				return fmt.Errorf("decode %s row %s: %w", bucket, k, err)
			}
			out = append(out, row)
			return nil
		})
	})
	return out, err
}
