package warm

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Watch is one flake the server follows (a [[warm]] table): its
// attributes are warmed whenever the flake's locked revision changes.
type Watch struct {
	Flake    string        `json:"flake"`    // a flake reference, without an attribute
	Attrs    []string      `json:"attrs"`    // attributes that evaluate to derivations
	Keep     int           `json:"keep"`     // revisions of each kept pinned; default 3
	Interval time.Duration `json:"interval"` // how often the lock is read; default 10m
	// Timeout and MaxMemory bound each nix command of this flake
	// (Nix.Timeout, Nix.MaxMemory); zero: the Follower's Nix's.
	Timeout   time.Duration `json:"timeout,omitempty"`
	MaxMemory int64         `json:"max_memory,omitempty"`
}

// Targets are the watch's FLAKEREF#ATTRs.
func (w Watch) Targets() []Target {
	out := make([]Target, len(w.Attrs))
	for i, a := range w.Attrs {
		out[i] = Target{Flake: w.Flake, Attr: a}
	}
	return out
}

// WarmFunc has the proxy warm an evaluated attribute, keeping keep
// revisions (admin.Service.Warm).
type WarmFunc func(ctx context.Context, r Report, keep int) error

// FollowOptions configure a Follower. Zero values mean defaults.
type FollowOptions struct {
	Nix     *Nix // default: nix from PATH
	Watches []Watch
	Locate  Locator
	Warm    WarmFunc
	Board   *Board
	// RetryMin and RetryMax bound the back-off after a failed try: it
	// starts at RetryMin (default 1m) and doubles up to RetryMax
	// (default 1h), never beyond the watch's interval... but at least
	// RetryMin.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
}

// Follower follows flakes' locks: one evaluation at a time, in its own
// goroutine, never in a request's way. A failed try (nix erring or timing
// out, the flake unreachable) is logged, shown on the Board and retried
// with back-off; nothing it does is fatal.
type Follower struct {
	opts  FollowOptions
	state []watchState
}

// watchState is what the Follower remembers of one Watch.
type watchState struct {
	Watch
	rev      string // the revision last warmed whole
	complete bool   // and everything substituted then
	next     time.Time
	failures int
}

// NewFollower returns a Follower; Run starts it.
func NewFollower(opts FollowOptions) *Follower {
	if opts.Nix == nil {
		opts.Nix = &Nix{}
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Minute
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Follower{opts: opts}
	for _, w := range opts.Watches {
		if w.Keep <= 0 {
			w.Keep = 3
		}
		if w.Interval <= 0 {
			w.Interval = 10 * time.Minute
		}
		f.state = append(f.state, watchState{Watch: w})
	}
	return f
}

// Run follows the watches until ctx ends: each is looked at once at the
// start, then every interval (or sooner, after a failure, with back-off).
func (f *Follower) Run(ctx context.Context) {
	if len(f.state) == 0 {
		return
	}
	for {
		i := f.due()
		wait := time.Until(f.state[i].next)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		f.look(ctx, &f.state[i])
	}
}

// due is the index of the watch to look at next.
func (f *Follower) due() int {
	best := 0
	for i, s := range f.state {
		if s.next.Before(f.state[best].next) {
			best = i
		}
	}
	return best
}

// look reads w's lock and, when its revision is new (or the last warm
// left something to build, which CI may have pushed since), warms every
// attribute of it.
func (f *Follower) look(ctx context.Context, w *watchState) {
	log := f.opts.Logger.With("flake", w.Flake)
	nix := *f.opts.Nix
	nix.Refresh = true // a push must show at the next look, not an hour later
	if w.Timeout > 0 {
		nix.Timeout = w.Timeout
	}
	if w.MaxMemory != 0 {
		nix.MaxMemory = w.MaxMemory
	}
	lock, err := nix.Metadata(ctx, w.Flake)
	if err != nil {
		f.failed(ctx, w, w.Targets(), []error{fmt.Errorf("lock the flake: %w", err)}, log)
		return
	}
	if lock.Revision() == w.rev && w.complete && w.failures == 0 {
		w.next = time.Now().Add(w.Interval)
		return
	}
	log.Info("warm: evaluating", "rev", lock.Short(), "previous", ShortRev(w.rev), "attrs", len(w.Attrs))
	complete := true
	var failed []Target
	var errs []error
	for _, t := range w.Targets() {
		r, err := Evaluate(ctx, &nix, t, f.opts.Locate)
		if err == nil {
			err = f.opts.Warm(ctx, r, w.Keep)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed, errs = append(failed, t), append(errs, err)
			continue
		}
		complete = complete && r.Complete()
		log.Info("warm: warmed", "attr", t.Attr, "rev", r.Lock.Short(), "paths", r.Paths, "cached", r.Cached,
			"upstream", r.Upstream, "missing", r.Missing, "builds", len(r.Build), "took", r.Took.Round(time.Millisecond))
	}
	if len(failed) > 0 {
		f.failed(ctx, w, failed, errs, log)
		return
	}
	w.rev, w.complete, w.failures = lock.Revision(), complete, 0
	w.next = time.Now().Add(w.Interval)
}

// failed records the failed tries of targets (errs[i] for targets[i], or
// errs[0] for all) and schedules the next look with back-off.
func (f *Follower) failed(ctx context.Context, w *watchState, targets []Target, errs []error, log *slog.Logger) {
	if ctx.Err() != nil {
		return // shutting down: not a failure
	}
	w.failures++
	wait := f.opts.RetryMin << min(w.failures-1, 20)
	wait = max(min(wait, f.opts.RetryMax, w.Interval), f.opts.RetryMin)
	now := time.Now()
	w.next = now.Add(wait)
	for i, t := range targets {
		err := errs[min(i, len(errs)-1)]
		log.Warn("warm: failed; retrying", "attr", t.Attr, "err", err, "failures", w.failures, "retry_in", wait)
		f.opts.Board.Failed(t.String(), err, now, w.next)
	}
}
