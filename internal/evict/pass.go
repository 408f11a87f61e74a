package evict

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Report is what one pass freed, or would free on a dry run.
type Report struct {
	DryRun  bool      `json:"dry_run"`
	Before  usage     `json:"before"`
	Reasons []Reason  `json:"reasons"` // size, free-space, retention; zero ones too
	Evicted []Evicted `json:"evicted"`
	// Pending are the NARs a fleet pass (--storage s3://) marked: deleted
	// by a later pass once the grace period is over, unless served since.
	Pending []Evicted `json:"pending,omitempty"`
	Kept    []Variant `json:"kept"` // variants --keep-latest keeps
	Skipped int       `json:"skipped"`
	Took    Duration  `json:"took"`
	Errors  []string  `json:"errors,omitempty"`
	// Held, when the pass could not reach its low watermark, says what
	// holds the space.
	Held *Held `json:"held,omitempty"`
	// Prune is gc's round of pruning the index (gc.go); nil for the
	// background passes.
	Prune *PruneReport `json:"prune,omitempty"`
}

// Reason totals the files evicted for one reason.
type Reason struct {
	Reason string `json:"reason"`
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
}

// Evicted is one NAR file evicted (or chosen, on a dry run).
type Evicted struct {
	NAR       string    `json:"nar"`
	StorePath string    `json:"store_path,omitempty"`
	Bytes     int64     `json:"bytes"`
	Access    time.Time `json:"last_access"`
	Reason    string    `json:"reason"`
	// Removed: an uploaded path, deleted whole (narinfo with NAR) since
	// nothing can refill it; Hash is its store path's hash.
	Removed bool   `json:"removed,omitempty"`
	Hash    string `json:"hash,omitempty"`
}

// Duration marshals as a string like "1.2s".
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Pass runs one eviction now: it evicts the least recently served NAR
// files until the cache is back under its low watermarks, and with
// retention (gc) also the variants --keep-latest no longer keeps. dryRun
// chooses the same files and evicts none.
func (e *Evictor) Pass(ctx context.Context, dryRun bool) (Report, error) {
	return e.pass(ctx, dryRun, false)
}

func (e *Evictor) pass(ctx context.Context, dryRun, retention bool) (Report, error) {
	e.running.Lock()
	defer e.running.Unlock()
	e.passMu.Lock()
	e.started++
	e.passMu.Unlock()
	defer e.passDone()
	start := time.Now()
	rep := Report{DryRun: dryRun, Evicted: []Evicted{}, Kept: []Variant{}}
	for _, r := range []string{ReasonSize, ReasonFreeSpace, ReasonRetention} {
		rep.Reasons = append(rep.Reasons, Reason{Reason: r})
	}
	u, err := e.usage(ctx)
	if err != nil {
		return rep, err
	}
	rep.Before = u
	e.checkDisk(u)
	// The accesses since the last pass go into the index at every pass
	// (one transaction, nothing when there were none), so a restart keeps
	// the order up to 10 s ago.
	if !dryRun {
		if err := e.st.FlushAccess(ctx); err != nil {
			return rep, fmt.Errorf("flush accesses: %w", err)
		}
	}
	if u.NeedSize <= 0 && u.NeedSpace <= 0 && !retention {
		return rep, nil // the common case: no walk at all
	}
	variants := newVariants(e.cfg.KeepLatest)
	if err := variants.collect(ctx, e.st); err != nil {
		return rep, err
	}
	pins, kept, err := e.protected(ctx, variants)
	if err != nil {
		return rep, err
	}
	keep := func(name string) bool { return pins[name] || kept[name] }
	rep.Kept = variants.kept()
	paths := variants.paths() // NAR name -> store path, for the report

	var chosen []Evicted
	taken := map[string]bool{}
	if retention {
		superseded := variants.superseded()
		uses, err := e.st.LookupNARs(ctx, superseded)
		if err != nil {
			return rep, fmt.Errorf("look up superseded variants: %w", err)
		}
		for _, name := range superseded {
			use, ok := uses[name]
			if !ok || !use.Refillable || keep(name) || taken[name] {
				continue // not on disk, an upload (below), or kept through another rule
			}
			taken[name] = true
			chosen = append(chosen, Evicted{NAR: name, StorePath: paths[name], Bytes: use.Size,
				Access: time.Unix(0, use.Access).UTC(), Reason: ReasonRetention})
		}
	}
	need := max(u.NeedSize, u.NeedSpace)
	if retention || need > 0 {
		// Uploaded variants left behind age out: nothing can refill them,
		// so they go whole, narinfo with NAR (uploads.go).
		ups, err := e.supersededUploads(ctx, variants, pins)
		if err != nil {
			return rep, err
		}
		for _, c := range ups {
			if !kept[c.NAR] && !taken[c.NAR] {
				taken[c.NAR] = true
				chosen = append(chosen, c)
			}
		}
	}
	var freed int64
	for _, c := range chosen {
		freed += c.Bytes
	}
	var held Held
	walked := false
	if freed < need {
		// Least recently served first, reading only as far as it takes;
		// a NAR with no upstream is never dropped, unless --evict-uploads
		// lets its path go whole.
		walked = true
		err := e.st.NARsByAge(ctx, func(n *store.NARUse) (bool, error) {
			name := string(n.Name)
			upload := !n.Refillable && e.cfg.EvictUploads
			if (!n.Refillable && !upload) || keep(name) || taken[name] {
				rep.Skipped++
				if !taken[name] {
					held.hold(name, n.Size, n.Refillable, pins, kept)
				}
				return true, nil
			}
			reason := ReasonSize
			if freed >= u.NeedSize {
				reason = ReasonFreeSpace
			}
			chosen = append(chosen, Evicted{NAR: name, Bytes: n.Size, Access: time.Unix(0, n.Access).UTC(), Reason: reason, Removed: upload})
			freed += n.Size
			return freed < need, nil
		})
		if err != nil {
			return rep, fmt.Errorf("walk NARs by age: %w", err)
		}
	}
	chosen, unclaimed, err := e.claimUploads(ctx, chosen)
	if err != nil {
		return rep, err
	}
	chosen, needed, err := e.referenced(ctx, chosen)
	if err != nil {
		return rep, err
	}
	for _, c := range append(unclaimed, needed...) {
		freed -= c.Bytes
		held.Uploads.add(c.Bytes)
	}
	if freed < need && walked {
		held.Short, held.Index = need-freed, u.Index
		rep.Held = &held
		e.log.Warn("eviction cannot reach its low watermark: the rest is pinned, kept or uploaded",
			"need", need, "can_free", freed, "pinned_bytes", held.Pinned.Bytes, "kept_bytes", held.Kept.Bytes,
			"upload_bytes", held.Uploads.Bytes, "index_bytes", held.Index)
	}
	for i := range chosen {
		if chosen[i].StorePath == "" {
			chosen[i].StorePath = paths[chosen[i].NAR]
		}
	}
	if dryRun {
		rep.Evicted = chosen
	} else {
		var nars, whole []Evicted
		for _, c := range chosen {
			if c.Removed {
				whole = append(whole, c)
			} else {
				nars = append(nars, c)
			}
		}
		rep.Evicted = append(e.evict(ctx, nars, &rep), e.deletePaths(ctx, whole, &rep)...)
	}
	for _, ev := range rep.Evicted {
		i := slices.IndexFunc(rep.Reasons, func(r Reason) bool { return r.Reason == ev.Reason })
		rep.Reasons[i].Files++
		rep.Reasons[i].Bytes += ev.Bytes
	}
	rep.Took = Duration(time.Since(start))
	if !dryRun && len(rep.Evicted) > 0 {
		attrs := []any{"took", time.Since(start).Round(time.Millisecond)}
		for _, r := range rep.Reasons {
			attrs = append(attrs, r.Reason+"_files", r.Files, r.Reason+"_bytes", r.Bytes)
		}
		e.log.Info("evicted", attrs...)
	}
	return rep, nil
}

// evict deletes chosen in batches and returns what was evicted, in
// chosen's order. The batches go in name order, not in chosen's: the rows
// of one batch are then neighbours in the index, and its transaction
// rewrites a few hundred of the index's pages instead of one per row
// (26,000 rows chosen by age are spread over the whole bucket: in age
// order each batch of 2048 rewrote ~1,800 pages, and all batches together
// three times the bucket). Their entries in the order of last use are
// the other way round: all at its start, each batch's spread over it, so
// every batch rewrites those ~500 pages again (26,000 entries, 52 to a
// page). All of chosen goes in this pass; only a pass cancelled
// halfway leaves some older files than it evicted.
func (e *Evictor) evict(ctx context.Context, chosen []Evicted, rep *Report) []Evicted {
	order := make([]int, len(chosen))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(chosen[a].NAR, chosen[b].NAR) })
	done := make([]bool, len(chosen))
	names := make([]string, 0, min(e.cfg.Batch, len(order))) // Batch may be far larger than a pass
	left := len(order)
	for batch := range slices.Chunk(order, e.cfg.Batch) {
		if ctx.Err() != nil {
			break
		}
		names = names[:0]
		for _, i := range batch {
			names = append(names, chosen[i].NAR)
		}
		start := time.Now()
		freed, err := e.st.EvictNARs(ctx, names)
		took := time.Since(start)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			e.log.Warn("eviction batch failed", "files", len(names), "err", err)
		}
		if !errors.Is(err, store.ErrNotEvicted) { // else still indexed and served: not evicted
			e.m.EvictedBytes.Add(float64(freed))
			for _, i := range batch {
				e.m.Evictions.WithLabelValues(chosen[i].Reason).Inc()
				done[i] = true
			}
		}
		if left -= len(batch); left > 0 {
			e.pauseAfter(ctx, took)
		}
	}
	out := []Evicted{}
	for i, c := range chosen {
		if done[i] {
			out = append(out, c)
		}
	}
	return out
}

// pauseAfter pauses a pass after a batch that took took, Config.Pause
// times as long, if the proxy is busy (goroutines wait for a CPU) and no
// download waits for the room the pass makes: a pass is background work,
// and deleting holds a core while it runs.
func (e *Evictor) pauseAfter(ctx context.Context, took time.Duration) {
	if e.cfg.Pause <= 0 || e.roomWaiters.Load() > 0 || !e.busy() {
		return
	}
	e.sleep(ctx, time.Duration(float64(took)*e.cfg.Pause))
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// passDone wakes those waiting for a pass to end.
func (e *Evictor) passDone() {
	e.passMu.Lock()
	e.passes++
	close(e.passed)
	e.passed = make(chan struct{})
	e.passMu.Unlock()
}

// String is the duration as time.Duration prints it, rounded to 1 ms.
func (d Duration) String() string { return time.Duration(d).Round(time.Millisecond).String() }
