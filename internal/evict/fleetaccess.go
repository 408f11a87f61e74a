package evict

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"
)

// Accesses across the fleet: each proxy keeps the NARs it served in the
// current hour in memory and, once per pass when that changed, rewrites
// one record in the bucket:
//
//	_proxy/access/<YYYY-MM-DDTHH>/<node>   {"name": unix ms, ...}
//
// so a hit costs a map write and the bucket sees one small PUT per proxy
// per interval, never one per hit. The evicting proxy reads every record,
// takes the latest access of each NAR over all of them, and folds the
// records of hours past into one (_proxy/access-merged), which it owns
// while it holds the lease.
const (
	accessDir    = "access/"
	accessMerged = "access-merged"
	periodLayout = "2006-01-02T15"
)

// accessRecords is this proxy's side: what it served, not yet published.
type accessRecords struct {
	b    FleetBucket
	node string

	mu    sync.Mutex
	fresh map[string]int64 // since the last publish, unix ms

	pubMu  sync.Mutex
	period string           // the hour cur is for
	cur    map[string]int64 // this proxy's accesses in period
	dirty  bool             // cur has accesses not yet in the bucket
}

func newAccessRecords(b FleetBucket, node string) *accessRecords {
	return &accessRecords{b: b, node: node}
}

func (a *accessRecords) touch(name string, at time.Time) {
	ms := at.UnixMilli()
	a.mu.Lock()
	if a.fresh == nil {
		a.fresh = make(map[string]int64)
	}
	if ms > a.fresh[name] {
		a.fresh[name] = ms
	}
	a.mu.Unlock()
}

// publish writes this proxy's record of the current hour if it changed.
// A failed write is retried with the next publish.
func (a *accessRecords) publish(ctx context.Context) error {
	a.mu.Lock()
	fresh := a.fresh
	a.fresh = nil
	a.mu.Unlock()
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	if p := time.Now().UTC().Format(periodLayout); p != a.period {
		// A new hour starts a new record; what the last one failed to
		// publish is carried into it.
		if !a.dirty {
			a.cur = nil
		}
		a.period = p
	}
	if a.cur == nil {
		a.cur = make(map[string]int64, len(fresh))
	}
	for name, ms := range fresh {
		if ms > a.cur[name] {
			a.cur[name] = ms
			a.dirty = true
		}
	}
	if !a.dirty {
		return nil
	}
	body, err := json.Marshal(a.cur)
	if err != nil {
		return err
	}
	if err := a.b.PutMeta(ctx, accessDir+a.period+"/"+a.node, body); err != nil {
		return err
	}
	a.dirty = false
	return nil
}

// fleetAccess is the latest access of each NAR over the whole fleet, and
// the records of hours past, which compact folds into the merged one.
type fleetAccess struct {
	last map[string]int64 // unix ms
	old  []string         // records of hours before the last one
}

// loadAccess reads every access record in the bucket.
func loadAccess(ctx context.Context, b FleetBucket, now time.Time) (*fleetAccess, error) {
	fa := &fleetAccess{last: map[string]int64{}}
	if err := fa.merge(ctx, b, accessMerged); err != nil {
		return nil, err
	}
	cutoff := now.UTC().Add(-time.Hour).Format(periodLayout)
	var recs []string
	if err := b.ListMeta(ctx, accessDir, func(rel string) error {
		recs = append(recs, rel)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, rel := range recs {
		if err := fa.merge(ctx, b, rel); err != nil {
			return nil, err
		}
		period, _, _ := strings.Cut(strings.TrimPrefix(rel, accessDir), "/")
		if period < cutoff {
			fa.old = append(fa.old, rel)
		}
	}
	return fa, nil
}

func (fa *fleetAccess) merge(ctx context.Context, b FleetBucket, rel string) error {
	body, err := b.GetMeta(ctx, rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]int64
	if err := json.Unmarshal(body, &m); err != nil {
		// A record this proxy cannot read orders nothing; it is not a
		// reason to stop evicting.
		return nil
	}
	for name, ms := range m {
		if ms > fa.last[name] {
			fa.last[name] = ms
		}
	}
	return nil
}

// compact folds the records of hours past into the merged one, keeping
// the NARs live reports (those still in the bucket), then drops them.
func (fa *fleetAccess) compact(ctx context.Context, b FleetBucket, live func(name string) bool) error {
	if len(fa.old) == 0 {
		return nil
	}
	keep := make(map[string]int64, len(fa.last))
	for name, ms := range fa.last {
		if live(name) {
			keep[name] = ms
		}
	}
	body, err := json.Marshal(keep)
	if err != nil {
		return err
	}
	// Merged first, then the records dropped: a crash between leaves
	// records merged twice, which changes nothing.
	if err := b.PutMeta(ctx, accessMerged, body); err != nil {
		return fmt.Errorf("merge access records: %w", err)
	}
	for _, rel := range fa.old {
		if err := b.DeleteMeta(ctx, rel); err != nil {
			return fmt.Errorf("drop merged access record: %w", err)
		}
	}
	return nil
}
