package evict

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// pendingRecord is the bucket record of the NARs marked for deletion,
// written only by the proxy holding the eviction lease.
const pendingRecord = "evict/pending"

// pendingNAR is one NAR marked for deletion.
type pendingNAR struct {
	Marked time.Time `json:"marked"`
	// Access is the latest access known when it was marked (unix ms,
	// the object's write time if later): one after it cancels.
	Access int64  `json:"access"`
	Bytes  int64  `json:"bytes"`
	Reason string `json:"reason"`
}

// held is one pass over the bucket, run holding the eviction lease: it
// deletes the pending NARs whose grace has passed and that nobody served
// or pinned since, then, past the bound, marks the least recently served
// NARs of the fleet until what is pending brings the bucket back to 90 %
// of it.
func (f *Fleet) held(ctx context.Context, rep *Report, dryRun, retention bool) error {
	now := time.Now()
	objs := map[string]s3store.NARObject{}
	var total int64
	if err := f.b.ListNARObjects(ctx, func(o s3store.NARObject) error {
		objs[o.Name] = o
		total += o.Size
		return nil
	}); err != nil {
		return err
	}
	rep.Before = usage{NARBytes: total, MaxSize: f.cfg.MaxSize, Free: -1}
	f.m.FleetBucketBytes.Set(float64(total))
	pending, err := f.loadPending(ctx)
	if err != nil {
		return err
	}
	changed := false
	var pendingBytes int64
	var due []string
	for name, p := range pending {
		if _, ok := objs[name]; !ok {
			delete(pending, name) // gone already
			changed = true
			continue
		}
		pendingBytes += p.Bytes
		if !now.Before(p.Marked.Add(f.cfg.Grace)) {
			due = append(due, name)
		}
	}
	max := f.cfg.MaxSize
	over := max > 0 && total-pendingBytes > max
	defer func() {
		if !dryRun {
			f.setPendingGauges(pending)
		}
	}()
	if len(due) == 0 && !over && !retention {
		if err := f.savePending(ctx, pending, changed && !dryRun); err != nil || dryRun {
			return err
		}
		return f.compactHourly(ctx, now, objs)
	}

	acc, err := loadAccess(ctx, f.b, now)
	if err != nil {
		return fmt.Errorf("read access records: %w", err)
	}
	variants := newVariants(f.cfg.KeepLatest)
	if len(f.cfg.KeepLatest) > 0 {
		if err := f.learnSources(ctx, objs); err != nil {
			return err
		}
		if err := variants.collect(ctx, f.st); err != nil {
			return err
		}
		f.fleetSeen(ctx, variants)
	}
	keep, err := f.protected(ctx, variants)
	if err != nil {
		return err
	}
	rep.Kept = variants.kept()
	paths := variants.paths()

	// Deletions: the NARs whose grace is over, oldest mark first.
	slices.SortFunc(due, func(a, b string) int { return pending[a].Marked.Compare(pending[b].Marked) })
	for _, name := range due {
		p := pending[name]
		if acc.last[name] > p.Access || keep[name] {
			// Served (or pinned) during its grace: it stays.
			delete(pending, name)
			changed = true
			pendingBytes -= p.Bytes
			if !dryRun {
				f.m.FleetEvictCancelled.Inc()
			}
			continue
		}
		ev := Evicted{NAR: name, StorePath: paths[name], Bytes: p.Bytes, Access: time.UnixMilli(p.Access).UTC(), Reason: p.Reason}
		if dryRun {
			rep.Evicted = append(rep.Evicted, ev)
			continue
		}
		if err := ctx.Err(); err != nil {
			return err // the lease was lost: the new holder goes on
		}
		obj, err := f.b.StatNARObject(ctx, name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(pending, name)
			delete(objs, name)
			changed = true
			total -= p.Bytes
			pendingBytes -= p.Bytes
			continue
		case err != nil:
			rep.Errors = append(rep.Errors, err.Error())
			continue // still pending
		case obj.Modified.After(p.Marked):
			// Evicted by hand and refilled since it was marked: a new
			// object, as recent as can be.
			delete(pending, name)
			changed = true
			pendingBytes -= p.Bytes
			continue
		}
		if err := f.b.DeleteNARObject(ctx, name); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		delete(pending, name)
		delete(objs, name)
		changed = true
		total -= p.Bytes
		pendingBytes -= p.Bytes
		rep.Evicted = append(rep.Evicted, ev)
		f.m.Evictions.WithLabelValues(p.Reason).Inc()
		f.m.EvictedBytes.Add(float64(p.Bytes))
	}

	marked, err := f.mark(ctx, rep, objs, pending, keep, acc, variants, total-pendingBytes, retention)
	if err != nil {
		return err
	}
	for _, m := range marked {
		if m.StorePath == "" {
			m.StorePath = paths[m.NAR]
		}
		rep.Pending = append(rep.Pending, m)
		if !dryRun {
			pending[m.NAR] = pendingNAR{Marked: now, Access: m.Access.UnixMilli(), Bytes: m.Bytes, Reason: m.Reason}
			changed = true
		}
	}
	for _, ev := range rep.Evicted {
		i := slices.IndexFunc(rep.Reasons, func(r Reason) bool { return r.Reason == ev.Reason })
		rep.Reasons[i].Files++
		rep.Reasons[i].Bytes += ev.Bytes
	}
	if dryRun {
		return nil
	}
	if err := f.savePending(ctx, pending, changed); err != nil {
		return err
	}
	if len(rep.Evicted) > 0 || len(marked) > 0 {
		f.log.Info("fleet eviction", "bucket_bytes", rep.Before.NARBytes, "deleted_files", len(rep.Evicted),
			"deleted_bytes", rep.Before.NARBytes-total, "marked_files", len(marked), "pending_files", len(pending))
	}
	f.compactedAt = now
	return acc.compact(ctx, f.b, func(name string) bool { _, ok := objs[name]; return ok })
}

// compactHourly folds the access records of hours past into the merged
// one, at most hourly, for a bucket within its bound (a pass that marks
// or deletes does it anyway): their number stays bounded.
func (f *Fleet) compactHourly(ctx context.Context, now time.Time, objs map[string]s3store.NARObject) error {
	if now.Sub(f.compactedAt) < time.Hour {
		return nil
	}
	acc, err := loadAccess(ctx, f.b, now)
	if err != nil {
		return fmt.Errorf("read access records: %w", err)
	}
	f.compactedAt = now
	return acc.compact(ctx, f.b, func(name string) bool { _, ok := objs[name]; return ok })
}

// mark chooses the NARs to mark: with retention the variants
// --keep-latest no longer keeps, then, while what stays (present minus
// pending) is past the bound, the least recently served across the
// fleet, down to 90 % of it.
func (f *Fleet) mark(ctx context.Context, rep *Report, objs map[string]s3store.NARObject, pending map[string]pendingNAR,
	keep map[string]bool, acc *fleetAccess, v *variants, staying int64, retention bool) ([]Evicted, error) {
	var out []Evicted
	taken := map[string]bool{}
	lastOf := func(o s3store.NARObject) int64 { return max(acc.last[o.Name], o.Modified.UnixMilli()) }
	eligible := func(name string) bool {
		_, isPending := pending[name]
		return !isPending && !keep[name] && !taken[name]
	}
	if retention {
		var names []string
		for _, name := range v.superseded() {
			if _, ok := objs[name]; ok && eligible(name) {
				names = append(names, name)
			}
		}
		refill, err := f.refillable(ctx, names)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if !refill[name] {
				continue
			}
			o := objs[name]
			taken[name] = true
			staying -= o.Size
			out = append(out, Evicted{NAR: name, Bytes: o.Size, Access: time.UnixMilli(lastOf(o)).UTC(), Reason: ReasonRetention})
		}
	}
	max := f.cfg.MaxSize
	if max <= 0 || staying <= max {
		return out, nil
	}
	need := staying - lowWater(max)
	type cand struct {
		o    s3store.NARObject
		last int64
	}
	// A NAR written in the last two intervals (and the second the bucket
	// rounds write times to) is not a candidate: the accesses of its
	// first clients may not be published yet.
	fresh := time.Now().Add(-2*f.cfg.Interval - time.Second)
	var cands []cand
	for name, o := range objs {
		if eligible(name) && o.Modified.Before(fresh) {
			cands = append(cands, cand{o, lastOf(o)})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.last, b.last), cmp.Compare(a.o.Name, b.o.Name))
	})
	var freed int64
	const chunk = 1024
	for lo := 0; lo < len(cands) && freed < need; lo += chunk {
		part := cands[lo:min(lo+chunk, len(cands))]
		names := make([]string, len(part))
		for i, c := range part {
			names[i] = c.o.Name
		}
		refill, err := f.refillable(ctx, names)
		if err != nil {
			return nil, err
		}
		for _, c := range part {
			if freed >= need {
				break
			}
			if !refill[c.o.Name] {
				rep.Skipped++ // an upload, or a NAR nobody recorded a source for
				continue
			}
			out = append(out, Evicted{NAR: c.o.Name, Bytes: c.o.Size, Access: time.UnixMilli(c.last).UTC(), Reason: ReasonSize})
			freed += c.o.Size
		}
	}
	if freed < need {
		f.log.Warn("fleet eviction cannot reach its low watermark: the rest is pending, pinned, kept or not refillable",
			"need", need, "can_mark", freed)
	}
	return out, nil
}

// refillable reports, for each name, whether its NAR can be fetched again
// once deleted. Sources this proxy's index lacks are read from the bucket
// (and kept in the index); a NAR with no source anywhere is an upload not
// yet claimed or a stray, and stays.
func (f *Fleet) refillable(ctx context.Context, names []string) (map[string]bool, error) {
	refill, err := f.st.Refillable(ctx, names)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, ok := refill[name]; ok {
			continue
		}
		src, err := f.st.NARSource(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		refill[name] = src.Refillable()
	}
	return refill, nil
}

// learnSources reads into this proxy's index the sources of the bucket's
// NARs it has not seen, so --keep-latest finds every variant: once per NAR.
func (f *Fleet) learnSources(ctx context.Context, objs map[string]s3store.NARObject) error {
	names := make([]string, 0, len(objs))
	for name := range objs {
		names = append(names, name)
	}
	for part := range slices.Chunk(names, 1024) {
		if _, err := f.refillable(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

// fleetSeen replaces each variant's first-seen time with the bucket's,
// the earliest any proxy recorded, and decides again.
func (f *Fleet) fleetSeen(ctx context.Context, v *variants) {
	for i := range v.found {
		for j := range v.found[i] {
			x := &v.found[i][j]
			if src, err := f.b.Source(ctx, x.NAR); err == nil && !src.Seen.IsZero() && src.Seen.Before(x.Seen) {
				x.Seen = src.Seen
			}
		}
	}
	v.decide()
}

// protected returns the NAR names no pass may mark or delete: those of
// the paths pinned on any proxy, of the kept variants, and of their
// closures, read from this proxy's index or else the bucket.
func (f *Fleet) protected(ctx context.Context, v *variants) (map[string]bool, error) {
	roots, err := f.b.PinnedHashes(ctx)
	if err != nil {
		return nil, fmt.Errorf("pins in the bucket: %w", err)
	}
	local, err := f.st.Pins(ctx)
	if err != nil {
		return nil, fmt.Errorf("pins: %w", err)
	}
	for _, p := range local {
		roots = append(roots, p.Hash)
	}
	for _, x := range v.kept() {
		roots = append(roots, x.Hash)
	}
	return closureNARs(ctx, f.readNarInfo, roots)
}

func (f *Fleet) readNarInfo(ctx context.Context, hash string) ([]byte, error) {
	text, err := f.st.ReadNarInfo(ctx, hash)
	if !errors.Is(err, store.ErrNotFound) {
		return text, err
	}
	text, err = f.b.NarInfo(ctx, hash)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, store.ErrNotFound
	}
	return text, err
}

func (f *Fleet) loadPending(ctx context.Context) (map[string]pendingNAR, error) {
	pending := map[string]pendingNAR{}
	body, err := f.b.GetMeta(ctx, pendingRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return pending, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pending evictions: %w", err)
	}
	if err := json.Unmarshal(body, &pending); err != nil {
		// Written by this code alone; unreadable means damaged. Starting
		// over only delays eviction by one grace period.
		f.log.Warn("pending evictions unreadable; starting over", "err", err)
		return map[string]pendingNAR{}, nil
	}
	return pending, nil
}

func (f *Fleet) savePending(ctx context.Context, pending map[string]pendingNAR, changed bool) error {
	if !changed {
		return nil
	}
	body, err := json.Marshal(pending)
	if err != nil {
		return err
	}
	if err := f.b.PutMeta(ctx, pendingRecord, body); err != nil {
		return fmt.Errorf("write pending evictions: %w", err)
	}
	return nil
}

func (f *Fleet) setPendingGauges(pending map[string]pendingNAR) {
	var bytes int64
	for _, p := range pending {
		bytes += p.Bytes
	}
	f.m.FleetEvictPendingFiles.Set(float64(len(pending)))
	f.m.FleetEvictPendingBytes.Set(float64(bytes))
}
