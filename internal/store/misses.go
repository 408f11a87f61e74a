package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketMisses = []byte("misses")

// Outcomes of a miss: what happened the last time a path was not in the
// cache when asked for. A refusal is "refused-" and the check that failed,
// as nix_cache_proxy_verification_failures_total labels it.
const (
	OutcomeFetched       = "fetched"        // an upstream had it; it is cached now
	OutcomeNotFound      = "not-found"      // no upstream had it
	OutcomeUpstreamError = "upstream-error" // upstreams could not be asked
	// An upstream's narinfo had no signature by a trusted key.
	OutcomeRefusedSignature = "refused-signature"
	// An upstream's narinfo did not parse, named another path or put its
	// NAR on another host.
	OutcomeRefusedNarInfo = "refused-narinfo"
	// The NAR downloaded was not the size or sha256 its narinfo gave.
	OutcomeRefusedSize = "refused-size"
	OutcomeRefusedHash = "refused-hash"
)

// Outcomes lists every outcome, for filters and their messages.
var Outcomes = []string{OutcomeFetched, OutcomeNotFound, OutcomeUpstreamError,
	OutcomeRefusedSignature, OutcomeRefusedNarInfo, OutcomeRefusedSize, OutcomeRefusedHash}

// Unanswered reports whether outcome means no upstream gave a narinfo the
// proxy keeps (not found, or refused): such a path is asked again later,
// since the upstream may get it (or sign it) meanwhile.
func Unanswered(outcome string) bool {
	return outcome == OutcomeNotFound || outcome == OutcomeRefusedSignature || outcome == OutcomeRefusedNarInfo
}

// Miss is the record of a store path that was asked for and not answered
// from the local cache.
type Miss struct {
	Hash      string    `json:"hash"`
	StorePath string    `json:"store_path,omitempty"` // known once an upstream had it
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Outcome   string    `json:"outcome"`
	// Reason says why, for a refusal or an upstream error: the text the
	// X-Nix-Cache-Proxy-Error header of that answer carried. Rows written
	// before it was kept have none (and a refusal's outcome "not-found").
	Reason   string `json:"reason,omitempty"`
	Upstream string `json:"upstream,omitempty"` // which upstream had it
	Bytes    int64  `json:"bytes,omitempty"`    // NAR file bytes fetched
	// NextCheck and CheckInterval schedule the re-asking of upstreams about
	// a not-found path; zero when no check is scheduled.
	NextCheck     time.Time     `json:"next_check,omitzero"`
	CheckInterval time.Duration `json:"check_interval,omitempty"`
	// Attr and Rev name the flake attribute (FLAKEREF#ATTR) and revision
	// whose warm found nobody had this path, the latest one.
	Attr string `json:"attr,omitempty"`
	Rev  string `json:"rev,omitempty"`
}

// MissEvent is one thing that happened to a path, merged into its Miss row.
type MissEvent struct {
	Hash    string
	At      time.Time
	Asked   bool   // a client asked for it (counts)
	Outcome string // "" leaves the outcome (and reason) as they were
	Reason  string // why the outcome, see Miss.Reason
	// Stored says the path is in the index now by other means than a
	// fetch (an upload): its row is deleted, since nothing is missing and
	// no upstream needs asking about it again.
	Stored    bool
	StorePath string
	Upstream  string
	Bytes     int64
	// Attr and Rev: a warm of this flake attribute at this revision
	// needs the path and found nobody has it.
	Attr, Rev string
}

// creates reports whether e makes a row for a path the log has none for:
// a client asked for it, or a warmed attribute needs it.
func (e MissEvent) creates() bool { return e.Asked || e.Attr != "" }

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
		m.Outcome, m.Reason = e.Outcome, e.Reason
		if !Unanswered(e.Outcome) {
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
	if e.Attr != "" {
		m.Attr, m.Rev = e.Attr, e.Rev
	}
}

// RecordMisses merges events into the miss log in one transaction and
// returns how many rows it created. Only a client's ask (Asked) or a warm
// (Attr) creates a row: the proxy's own lookups (prefetch, the watcher) and NAR downloads
// update the row of a path a client asked for, but are not demand, so a
// prefetched closure neither fills the log nor pushes real misses out.
// Pruning is PruneMisses', outside this transaction.
func (s *Store) RecordMisses(ctx context.Context, events []MissEvent) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	created := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		created = 0 // bbolt does not retry, but keep the count true to the commit
		b, err := tx.CreateBucketIfNotExists(bucketMisses)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.Stored {
				if err := b.Delete([]byte(e.Hash)); err != nil {
					return err
				}
				continue
			}
			var m Miss
			if row := b.Get([]byte(e.Hash)); row != nil {
				if err := json.Unmarshal(row, &m); err != nil {
					return fmt.Errorf("decode miss %s: %w", e.Hash, err)
				}
			} else if !e.creates() {
				continue
			} else {
				created++
			}
			m.merge(e)
			if err := putMiss(b, &m); err != nil {
				return err
			}
		}
		return nil
	})
	return created, err
}

// MergeMisses returns rows with events merged in as RecordMisses would
// merge them, most recently seen first, without writing anything: what
// the miss log will say once those events are flushed. rows is modified.
func MergeMisses(rows []Miss, events []MissEvent) []Miss {
	at := make(map[string]int, len(rows))
	for i, m := range rows {
		at[m.Hash] = i
	}
	for _, e := range events {
		i, ok := at[e.Hash]
		if e.Stored {
			if ok {
				// Blanked, not removed, so the indexes in at stay
				// true; dropped below unless a later ask refills it.
				rows[i] = Miss{}
			}
			continue
		}
		if !ok || rows[i].Hash == "" {
			if !e.creates() {
				continue
			}
			if !ok {
				i = len(rows)
				at[e.Hash] = i
				rows = append(rows, Miss{})
			}
		}
		rows[i].merge(e)
	}
	rows = slices.DeleteFunc(rows, func(m Miss) bool { return m.Hash == "" })
	sortMisses(rows)
	return rows
}

// UpdateMiss changes the row for hash with fn; a missing row is ErrNotFound.
func (s *Store) UpdateMiss(ctx context.Context, hash string, fn func(*Miss)) error {
	err := s.UpdateMisses(ctx, map[string]func(*Miss){hash: fn})
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// UpdateMisses changes the row of each hash in fns with its func, in one
// transaction (one fsync however many). Rows missing are skipped; the error
// then wraps ErrNotFound, after the others are written.
func (s *Store) UpdateMisses(ctx context.Context, fns map[string]func(*Miss)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var missing missingRows
	err := s.db.Update(func(tx *bolt.Tx) error {
		missing = 0
		b, err := tx.CreateBucketIfNotExists(bucketMisses)
		if err != nil {
			return err
		}
		for hash, fn := range fns {
			row := b.Get([]byte(hash))
			if row == nil {
				missing++
				continue
			}
			var m Miss
			if err := json.Unmarshal(row, &m); err != nil {
				return fmt.Errorf("decode miss %s: %w", hash, err)
			}
			fn(&m)
			if err := putMiss(b, &m); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && missing > 0 {
		return missing
	}
	return err
}

// missingRows counts the rows UpdateMisses did not find.
type missingRows int

func (n missingRows) Error() string { return fmt.Sprintf("%d miss rows not found", int(n)) }
func (n missingRows) Unwrap() error { return ErrNotFound }

func putMiss(b *bolt.Bucket, m *Miss) error {
	row, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put([]byte(m.Hash), row)
}

// Misses returns every row of the miss log, most recently seen first.
func (s *Store) Misses(ctx context.Context) ([]Miss, error) {
	out, err := listRows[Miss](ctx, s, bucketMisses)
	sortMisses(out)
	return out, err
}

func sortMisses(rows []Miss) {
	slices.SortFunc(rows, func(a, b Miss) int { return b.LastSeen.Compare(a.LastSeen) })
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
