package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	defaultHedge    = 500 * time.Millisecond
	defaultStraggle = time.Second
)

// Group asks several upstreams, in priority order, with hedging: a slow
// first choice does not hold a lookup hostage while the next one could
// answer. A client whose breaker is open answers at once with
// ErrUnavailable, so the next one is asked without waiting; meanwhile the
// Group probes it in the background until it answers again.
type Group struct {
	clients  []*Client
	hedge    time.Duration
	straggle time.Duration // 0: wait for the client's own timeout

	log *slog.Logger

	ctx    context.Context // cancelled by Close: ends the probes
	cancel context.CancelFunc
	probes sync.WaitGroup
}

// NewGroup returns a Group over clients, highest priority first. hedge is
// how long a request may go unanswered before the next upstream is asked
// as well; 0 means 500ms. It starts a watcher per client, which Close
// stops.
func NewGroup(clients []*Client, hedge time.Duration) *Group {
	return NewGroupWith(clients, GroupOptions{Hedge: hedge})
}

// GroupOptions configure a Group. Zero values mean defaults.
type GroupOptions struct {
	// Hedge is how long a request may go unanswered before the next
	// upstream is asked as well; default 500ms.
	Hedge time.Duration
	// Straggle bounds how long, from when it was asked, an upstream may
	// take to answer once every other upstream has answered without an
	// accepted narinfo: a hung upstream then costs a lookup about a second
	// rather than its whole timeout, and counts as failing. Default 1s;
	// NoStraggle waits for the client's own timeout.
	Straggle time.Duration
	// Logger is told once when an upstream's breaker opens (a warning: it
	// is skipped from then on) and once when it closes again, whatever
	// the number of lookups meanwhile.
	Logger *slog.Logger
}

// NoStraggle as GroupOptions.Straggle never gives up on an upstream
// before its own timeout.
const NoStraggle time.Duration = -1

// NewGroupWith returns a Group over clients, highest priority first.
func NewGroupWith(clients []*Client, opts GroupOptions) *Group {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Group{clients: slices.Clone(clients), hedge: orDefault(opts.Hedge, defaultHedge),
		straggle: max(orDefault(opts.Straggle, defaultStraggle), 0), log: opts.Logger}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, c := range g.clients {
		c.breaker.setProbed(true)
		g.probes.Go(func() { g.watch(c) })
	}
	return g
}

// Close stops the background probes and waits for them. Lookups still
// work afterwards; an open breaker then closes through a client's trial
// request.
func (g *Group) Close() {
	g.cancel()
	g.probes.Wait()
}

// Clients returns the group's clients in priority order.
func (g *Group) Clients() []*Client { return slices.Clone(g.clients) }

// Down returns an error saying why when no upstream answers: every
// breaker is open (or half-open, its trial in flight), so every lookup
// is skipped. It returns nil while at least one upstream is asked.
func (g *Group) Down() error {
	var why []string
	for _, c := range g.clients {
		state, retryAt := c.breaker.State()
		if state == BreakerClosed {
			return nil
		}
		reason := c.name + " " + state.String()
		if state == BreakerOpen {
			reason += ", next try in " + max(time.Until(retryAt), 0).Round(100*time.Millisecond).String()
		}
		if err := c.breaker.lastError(); err != nil {
			reason += " (last: " + reasonOf(err) + ")"
		}
		why = append(why, reason)
	}
	if len(why) == 0 {
		return nil // no upstreams: nothing is down
	}
	return errors.New("no upstream answers: " + strings.Join(why, "; "))
}

// Answer is an accepted narinfo and the upstream that gave it.
type Answer struct {
	// Client is the upstream that answered.
	Client *Client
	// Body is the narinfo as that upstream sent it.
	Body []byte
}

// attempt is one upstream's outcome.
type attempt struct {
	i    int
	body []byte
	err  error
}

// NarInfo asks the clients in order for hash's narinfo. It moves on to the
// next client when the current one reports not-found, fails, has its answer
// refused by accept, or has not answered within the hedge delay (then both
// are in flight). The first answer accept returns nil for wins, and the
// other requests are cancelled. accept may be nil (accept all); it is called
// from NarInfo's goroutine, one answer at a time.
//
// When no answer is accepted the error joins every upstream's reason
// (including accept's errors) and wraps ErrUnavailable if any upstream was
// unavailable, so an outage is never taken for a miss; else it wraps
// ErrNotFound. Cancelling ctx returns ctx.Err() promptly.
func (g *Group) NarInfo(ctx context.Context, hash string, accept func(*Client, []byte) error) (Answer, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // cancels the losers

	// Buffered so late losers never block after we return.
	results := make(chan attempt, len(g.clients))
	next, inflight := 0, 0
	hedge := time.NewTimer(g.hedge)
	defer hedge.Stop()
	// Each request can be given up on alone, with ErrStraggler as cause.
	stop := make([]context.CancelCauseFunc, len(g.clients))
	actxs := make([]context.Context, len(g.clients))
	asked := make([]time.Time, len(g.clients))
	answered := make([]bool, len(g.clients))
	startNext := func() {
		if next == len(g.clients) {
			return
		}
		i := next
		next++
		inflight++
		actx, cancel := context.WithCancelCause(ctx)
		stop[i], actxs[i], asked[i] = cancel, actx, time.Now()
		go func() {
			body, err := g.clients[i].NarInfo(actx, hash)
			results <- attempt{i, body, err}
		}()
		hedge.Reset(g.hedge)
	}
	// straggler fires when the one request left unanswered, every other
	// upstream having answered, has had its straggle time.
	straggler := time.NewTimer(time.Hour)
	straggler.Stop()
	defer straggler.Stop()
	armStraggler := func() {
		if g.straggle <= 0 || next < len(g.clients) || inflight == 0 {
			return
		}
		var first time.Time
		for i := range g.clients {
			if !answered[i] && (first.IsZero() || asked[i].Before(first)) {
				first = asked[i]
			}
		}
		straggler.Reset(max(time.Until(first.Add(g.straggle)), 0))
	}

	reasons := make([]error, len(g.clients))
	startNext()
	for inflight > 0 {
		select {
		case <-parent.Done():
			return Answer{}, parent.Err()
		case <-hedge.C:
			startNext()
			armStraggler()
		case <-straggler.C:
			for i := range g.clients {
				if !answered[i] && stop[i] != nil {
					stop[i](ErrStraggler)
				}
			}
		case r := <-results:
			inflight--
			answered[r.i] = true
			err := r.err
			if err != nil && errors.Is(context.Cause(actxs[r.i]), ErrStraggler) {
				err = &failure{g.clients[r.i].name, fmt.Sprintf("%v after %v", ErrStraggler,
					time.Since(asked[r.i]).Round(10*time.Millisecond)), ErrUnavailable, ErrStraggler}
			}
			if err == nil && accept != nil {
				if aerr := accept(g.clients[r.i], r.body); aerr != nil {
					err = fmt.Errorf("upstream %s: refused: %w", g.clients[r.i], aerr)
				}
			}
			if err == nil {
				return Answer{Client: g.clients[r.i], Body: r.body}, nil
			}
			reasons[r.i] = err
			startNext()
			armStraggler()
		}
	}
	if err := parent.Err(); err != nil {
		return Answer{}, err
	}
	return Answer{}, newGroupError(hash, reasons)
}

// groupError reports why no upstream gave an accepted answer.
type groupError struct {
	hash    string
	kind    error // ErrUnavailable or ErrNotFound
	reasons []error
}

func newGroupError(hash string, reasons []error) *groupError {
	e := &groupError{hash: hash, kind: ErrNotFound}
	for _, r := range reasons {
		if r == nil {
			continue
		}
		e.reasons = append(e.reasons, r)
		if errors.Is(r, ErrUnavailable) {
			e.kind = ErrUnavailable
		}
	}
	return e
}

// Error says what each upstream said, on one line. The outcome is left to
// the caller's words ("upstream unavailable", "not found"): errors.Is
// finds it.
func (e *groupError) Error() string {
	var b strings.Builder
	b.WriteString("narinfo ")
	b.WriteString(e.hash)
	if len(e.reasons) == 0 {
		b.WriteString(": no upstreams")
	}
	for i, r := range e.reasons {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(r.Error())
	}
	return b.String()
}

// Unwrap returns the outcome and the reasons. When the outcome is
// ErrUnavailable, reasons that wrap ErrNotFound are left out, so
// errors.Is(err, ErrNotFound) is false and a caller that checks for a miss
// first still cannot mistake an outage for one. Their text stays in Error.
func (e *groupError) Unwrap() []error {
	out := []error{e.kind}
	for _, r := range e.reasons {
		if e.kind == ErrUnavailable && errors.Is(r, ErrNotFound) {
			continue
		}
		out = append(out, r)
	}
	return out
}
