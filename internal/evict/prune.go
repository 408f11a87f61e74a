package evict

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// DefaultPruneAfter is how long a narinfo whose NAR is evicted stays in the
// index unused: Nix's narinfo-cache-positive-ttl (30 days), how long a
// client holds a narinfo, URL included, without asking again. Pruned
// earlier, a client holding it would get a 404 for its NAR.
const DefaultPruneAfter = 30 * 24 * time.Hour

const (
	// pruneEvery is how often the index is pruned when it has no backlog:
	// each round walks every narinfo twice, and a day's stamps make finer
	// rounds pointless.
	pruneEvery = time.Hour
	// pruneFirst is how long after the start the first round runs: not
	// in the middle of the start, but also for a proxy restarted often.
	pruneFirst = 5 * time.Minute
	// pruneMax bounds the narinfos one round considers (and holds in
	// memory, with their references); the rest wait for the next round.
	pruneMax = 32768
	// pruneBatch is how many narinfos one write transaction deletes.
	pruneBatch = 1024
	// pruneRestMin is the least pause between two rounds draining a
	// backlog; otherwise the pause is as long as the round took, so a
	// backlog takes at most about half a core.
	pruneRestMin = 100 * time.Millisecond
)

// PruneReport is what one pruning round did, or on a dry run would do.
type PruneReport struct {
	DryRun bool `json:"dry_run"`
	Off    bool `json:"off,omitempty"` // --prune-after 0: nothing is ever pruned
	Stale  int  `json:"stale"`         // narinfos stale on their own in this round's window (up to pruneMax)
	Needed int  `json:"needed"`        // of those, kept: a narinfo that stays references them
	// Pruned were deleted with their origin records; on a dry run, would
	// be. Bytes is what their rows held (narinfo text and origin record).
	Pruned int   `json:"pruned"`
	Bytes  int64 `json:"bytes"`
	// Backlog is how many stale narinfos lie beyond this round's window:
	// later rounds consider them, soon after this one (not an hour later)
	// while rounds keep pruning.
	Backlog int      `json:"backlog"`
	Stopped bool     `json:"stopped"` // one was served or refilled meanwhile: the rest waits
	Took    Duration `json:"took"`
}

// pruneCand is a stale narinfo a round may prune.
type pruneCand struct {
	hash, nar string
	refs      []string
	bytes     int  // what its rows hold (NarInfoUse.Bytes)
	needed    bool // a narinfo that stays references it, maybe through others
	in        int  // prunable narinfos that reference it, for the order
}

// pruneLoop prunes the index pruneFirst after the start, then every
// pruneEvery; while a backlog drains (prunePace), the next round comes
// after a pause as long as the last one took. It runs until ctx ends.
func (e *Evictor) pruneLoop(ctx context.Context) {
	if e.cfg.PruneAfter < 0 {
		return
	}
	t := time.NewTimer(e.pruneFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.pruneKick:
			// gc ran a round that left a backlog: carry on from it.
			t.Reset(e.pruneWait())
			continue
		case <-t.C:
		}
		wait := pruneEvery // after a failure, as if there were no backlog
		if _, err := e.Prune(ctx); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("prune the index", "err", err)
			}
		} else {
			wait = e.pruneWait()
		}
		t.Reset(wait)
	}
}

// pruneWait is how long until the next round: pruneEvery, or while a
// backlog drains, the last round's time (at least pruneRestMin).
func (e *Evictor) pruneWait() time.Duration {
	e.pruning.Lock()
	defer e.pruning.Unlock()
	if !e.pruneSoon {
		return pruneEvery
	}
	return max(e.pruneTook, pruneRestMin)
}

// prunePace decides, after a round that ran (not a dry run), whether the
// next one comes soon: when stale narinfos lie beyond this round's window
// and rounds still prune. A window of stale narinfos all needed by stale
// ones outside it prunes nothing, yet the rounds after it may (that is
// how a backlog drains); only once the fruitless rounds since the last
// that pruned have looked at every stale narinfo (all needed by narinfos
// that stay) does the pace fall back to hourly, until a round prunes
// again or a window's worth more narinfos have become stale since.
// Called under e.pruning.
func (e *Evictor) prunePace(rep PruneReport, took time.Duration) {
	total := rep.Stale + rep.Backlog
	if rep.Pruned > 0 || total == 0 {
		e.fruitless, e.pruneIdle = 0, false
	} else {
		if e.pruneIdle && total >= e.idleTotal+e.pruneLimit {
			e.fruitless, e.pruneIdle = 0, false // a new backlog: sweep it
		}
		e.fruitless += rep.Stale
		if !e.pruneIdle && e.fruitless >= total {
			e.pruneIdle, e.idleTotal = true, total
		}
	}
	e.pruneSoon = rep.Backlog > 0 && !e.pruneIdle
	e.pruneTook = took
}

// Prune deletes from the index the narinfos, and their NAR origin records,
// that no client can still hold and nothing kept needs: the NAR is not on
// disk (evicted), it can be fetched again from an upstream (never an
// upload), it was neither served nor stored for PruneAfter (counted in
// whole days), it is not pinned nor a --keep-latest survivor, and no
// narinfo that stays references it, directly or through others (Nix fails
// a substitution whose reference has no narinfo, so pins', survivors' and
// every kept narinfo's closures stay whole). It runs outside the hit path
// in bounded batches, referrers before what they reference, and stops at
// the first narinfo served, pinned or refilled since it was chosen.
func (e *Evictor) Prune(ctx context.Context) (PruneReport, error) {
	return e.prune(ctx, false)
}

// prune is Prune; with dryRun it reports what Prune would delete now (the
// same window, the same rules) and deletes nothing, the window staying put.
func (e *Evictor) prune(ctx context.Context, dryRun bool) (PruneReport, error) {
	start := time.Now()
	rep := PruneReport{DryRun: dryRun, Off: e.cfg.PruneAfter < 0}
	if e.cfg.PruneAfter < 0 {
		return rep, nil
	}
	e.pruning.Lock()
	defer e.pruning.Unlock()
	if !dryRun {
		if err := e.st.FlushServed(ctx); err != nil {
			return rep, fmt.Errorf("flush narinfo serving days: %w", err)
		}
	}
	cutoff := e.cfg.Now().Add(-e.cfg.PruneAfter)
	variants := newVariants(e.cfg.KeepLatest)
	if err := variants.collect(ctx, e.st); err != nil {
		return rep, err
	}
	roots := map[string]bool{}
	for _, v := range variants.kept() {
		roots[v.Hash] = true
	}

	// The stale narinfos, with what they reference: at most pruneLimit, in
	// hash order from where the last round's window ended, wrapping
	// around (those before it are held apart, up to pruneLimit too, and
	// fill what is left). A window that stayed put would keep choosing
	// the same narinfos, needed by stale ones outside it, round after round.
	cands := map[string]*pruneCand{}
	var before []*pruneCand
	from, stale := e.pruneFrom, 0
	err := e.st.WalkNarInfoUse(ctx, cutoff, func(u *store.NarInfoUse) error {
		if !u.Stale || roots[u.Hash] {
			return nil
		}
		stale++
		early := u.Hash < from
		if early && len(before) >= e.pruneLimit || !early && len(cands) >= e.pruneLimit {
			return nil
		}
		c := &pruneCand{hash: strings.Clone(u.Hash), nar: strings.Clone(u.NAR), refs: make([]string, len(u.Refs)), bytes: u.Bytes}
		for i, r := range u.Refs {
			c.refs[i] = strings.Clone(r)
		}
		if early {
			before = append(before, c)
		} else {
			cands[c.hash] = c
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	next := ""
	if len(cands) >= e.pruneLimit {
		last := ""
		for h := range cands {
			last = max(last, h)
		}
		next = last + "\x00" // the next round starts after it
	} else {
		// The walk reached the end: wrap around to the start.
		for _, c := range before {
			if len(cands) >= e.pruneLimit {
				break
			}
			cands[c.hash] = c
			if len(cands) >= e.pruneLimit {
				next = c.hash + "\x00"
			}
		}
	}
	if !dryRun {
		e.pruneFrom = next
	}
	before = nil
	rep.Stale, rep.Backlog = len(cands), stale-len(cands)
	if len(cands) > 0 {
		if err := e.pruneWindow(ctx, cands, cutoff, dryRun, &rep); err != nil {
			return rep, err
		}
	}
	took := time.Since(start)
	rep.Took = Duration(took)
	if dryRun {
		return rep, nil
	}
	e.prunePace(rep, took)
	if rep.Pruned > 0 || rep.Stopped {
		e.log.Info("pruned the index", "narinfos", rep.Pruned, "bytes", rep.Bytes, "stale", rep.Stale, "needed", rep.Needed,
			"backlog", rep.Backlog, "stopped", rep.Stopped, "took", took.Round(time.Millisecond))
	}
	return rep, nil
}

// pruneWindow prunes (on a dry run, counts) the candidates of one round
// that nothing staying needs.
func (e *Evictor) pruneWindow(ctx context.Context, cands map[string]*pruneCand, cutoff time.Time, dryRun bool, rep *PruneReport) error {
	candNARs := map[string]bool{}
	for _, c := range cands {
		candNARs[c.nar] = true
	}
	// What stays keeps what it references, and the origin records of NARs
	// it shares with a stale narinfo.
	keepNAR := map[string]bool{}
	var queue []*pruneCand
	need := func(h string) {
		if c, ok := cands[h]; ok && !c.needed {
			c.needed = true
			queue = append(queue, c)
		}
	}
	err := e.st.WalkNarInfoUse(ctx, time.Time{}, func(u *store.NarInfoUse) error {
		if _, ok := cands[u.Hash]; ok {
			return nil
		}
		if candNARs[u.NAR] {
			keepNAR[strings.Clone(u.NAR)] = true
		}
		for _, r := range u.Refs {
			need(r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for len(queue) > 0 {
		c := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		rep.Needed++
		keepNAR[c.nar] = true
		for _, r := range c.refs {
			need(r)
		}
	}
	order := pruneOrder(cands)
	if dryRun {
		rep.Pruned = len(order)
		for _, h := range order {
			rep.Bytes += int64(cands[h].bytes)
		}
		return nil
	}
	for batch := range slices.Chunk(order, pruneBatch) {
		n, all, err := e.st.PruneNarInfos(ctx, batch, cutoff, func(nar string) bool { return keepNAR[nar] })
		rep.Pruned += n
		for _, h := range batch[:n] {
			rep.Bytes += int64(cands[h].bytes)
		}
		e.m.PrunedNarInfos.Add(float64(n))
		if err != nil {
			return err
		}
		if !all {
			rep.Stopped = true
			break
		}
	}
	return nil
}

// pruneOrder lists the candidates not needed, each before those it
// references (Kahn's order over the references among them), so a round
// stopped halfway never leaves a narinfo whose reference is gone.
func pruneOrder(cands map[string]*pruneCand) []string {
	for _, c := range cands {
		if c.needed {
			continue
		}
		for _, r := range c.refs {
			if rc, ok := cands[r]; ok && !rc.needed {
				rc.in++
			}
		}
	}
	var ready, order []string
	for h, c := range cands {
		if !c.needed && c.in == 0 {
			ready = append(ready, h)
		}
	}
	for len(ready) > 0 {
		h := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		order = append(order, h)
		for _, r := range cands[h].refs {
			if rc, ok := cands[r]; ok && !rc.needed {
				if rc.in--; rc.in == 0 {
					ready = append(ready, r)
				}
			}
		}
	}
	// Store paths cannot reference each other in a cycle; should the index
	// hold one anyway, its narinfos are left alone.
	return order
}
