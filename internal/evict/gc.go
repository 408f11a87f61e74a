package evict

import (
	"context"
	"fmt"
)

// Collect is gc: an eviction pass now, which also evicts the variants
// --keep-latest no longer keeps, then a round of pruning the index
// (Report.Prune). dryRun chooses the same and deletes nothing.
func (e *Evictor) Collect(ctx context.Context, dryRun bool) (Report, error) {
	rep, err := e.pass(ctx, dryRun, true)
	if err != nil {
		return rep, err
	}
	e.gcPrune(ctx, dryRun, &rep)
	return rep, nil
}

// gcPrune runs gc's round of pruning the index into rep.Prune (on a dry
// run, what a round would prune now). Index rows count toward the bound,
// so gc prunes them like NAR files; a failure is one of rep's errors, the
// pass's report stands. A round that leaves a backlog sets the background
// loop to carry on from it soon, not an hour later.
func (e *Evictor) gcPrune(ctx context.Context, dryRun bool, rep *Report) {
	p, err := e.prune(ctx, dryRun)
	rep.Prune = &p
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("prune the index: %v", err))
		return
	}
	if !dryRun && p.Backlog > 0 {
		select {
		case e.pruneKick <- struct{}{}:
		default:
		}
	}
}
