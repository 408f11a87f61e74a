package upstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// BreakerState is where an upstream's circuit breaker stands. The numbers
// are the values of the nix_cache_proxy_upstream_breaker_state gauge.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed: requests go to the upstream.
	BreakerClosed BreakerState = 0
	// BreakerOpen: the upstream failed FailureThreshold requests in a row;
	// requests fail at once with ErrUnavailable until the back-off ends.
	BreakerOpen BreakerState = 1
	// BreakerHalfOpen: the back-off is over and one trial request (a
	// client's or the Group's probe) is in flight; the others still fail
	// at once. Its success closes the breaker, its failure opens it again
	// for twice as long (up to BackoffMax).
	BreakerHalfOpen BreakerState = 2
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// Defaults for the breaker's Options.
const (
	defaultFailureThreshold = 3
	defaultBackoffMin       = time.Second
	defaultBackoffMax       = 30 * time.Second
)

// outcome is what one guarded request tells the breaker.
type outcome int

const (
	// answered: the upstream answered (a 404 is an answer).
	answered outcome = iota
	// failed: connection error, timeout, 5xx or another useless answer.
	failed
	// abandoned: the caller gave up first; says nothing about the upstream.
	abandoned
)

// ticket is a permission to send one request, to hand back to report.
type ticket struct {
	gen   uint64 // the closed period it was issued in
	trial bool   // the half-open state's one request
}

// breaker fails requests to an upstream fast while that upstream is down,
// so a dead or hung upstream costs each lookup nothing instead of a
// timeout. It counts consecutive failures of requests issued while closed;
// a request issued before the breaker opened and finishing after is stale
// and ignored. It is safe for concurrent use.
type breaker struct {
	threshold  int
	backoffMin time.Duration
	backoffMax time.Duration
	now        func() time.Time
	changed    func(s BreakerState, tripped bool) // called with mu held: must not block

	mu       sync.Mutex
	state    BreakerState
	failures int    // consecutive, while closed
	gen      uint64 // bumped when the breaker opens
	backoff  time.Duration
	retryAt  time.Time // when open: the end of the back-off
	lastErr  error     // the failure that opened it, or the last trial's
	tripped  chan struct{}
	// probed is set while a Group's probe watches the upstream: then the
	// trial is the probe's alone, and no client's lookup ever waits on a
	// dead upstream after the breaker opened.
	probed bool
}

func newBreaker(threshold int, backoffMin, backoffMax time.Duration, changed func(BreakerState, bool)) *breaker {
	if threshold <= 0 {
		threshold = defaultFailureThreshold
	}
	backoffMin = orDefault(backoffMin, defaultBackoffMin)
	backoffMax = max(orDefault(backoffMax, defaultBackoffMax), backoffMin)
	if changed == nil {
		changed = func(BreakerState, bool) {}
	}
	return &breaker{
		threshold: threshold, backoffMin: backoffMin, backoffMax: backoffMax,
		now: time.Now, changed: changed,
		tripped: make(chan struct{}, 1),
	}
}

// errOpen is why a request was not sent.
type errOpen struct {
	failures int
	retryIn  time.Duration // 0: a trial is in flight or due
	last     error
}

func (e *errOpen) Error() string {
	next := "being retried"
	if e.retryIn > 0 {
		next = "next try in " + e.retryIn.Round(100*time.Millisecond).String()
	}
	s := fmt.Sprintf("skipped: down after %d failures in a row, %s", e.failures, next)
	if e.last != nil {
		s += " (last: " + reasonOf(e.last) + ")"
	}
	return s
}

// Unwrap makes every skipped request an ErrSkipped.
func (e *errOpen) Unwrap() error { return ErrSkipped }

// allow returns a ticket when a request may be sent, else an *errOpen.
// After the back-off, the first caller gets the trial; while a probe
// watches, only the probe (probe true) does.
func (b *breaker) allow(probe bool) (ticket, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerClosed:
		return ticket{gen: b.gen}, nil
	case BreakerOpen:
		if !b.now().Before(b.retryAt) && (probe || !b.probed) {
			b.set(BreakerHalfOpen)
			return ticket{gen: b.gen, trial: true}, nil
		}
	}
	return ticket{}, &errOpen{b.threshold, max(0, b.retryAt.Sub(b.now())), b.lastErr}
}

// report tells the breaker how the request of t ended; err is its error,
// kept for the messages of skipped requests.
func (b *breaker) report(t ticket, o outcome, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.trial {
		switch o {
		case answered:
			b.failures, b.backoff, b.lastErr = 0, 0, nil
			b.set(BreakerClosed)
		case failed:
			b.lastErr = err
			b.open(min(2*b.backoff, b.backoffMax))
		case abandoned:
			// No evidence either way: wait out the same back-off again
			// rather than make the next caller pay for another trial now.
			b.open(b.backoff)
		}
		return
	}
	if b.state != BreakerClosed || t.gen != b.gen {
		return // stale: issued before the breaker last opened
	}
	switch o {
	case answered:
		b.failures = 0
	case failed:
		b.failures++
		if b.failures >= b.threshold {
			b.lastErr = err
			b.gen++
			b.open(b.backoffMin)
			select {
			case b.tripped <- struct{}{}:
			default:
			}
		}
	}
}

// open starts a back-off of d. Called with mu held.
func (b *breaker) open(d time.Duration) {
	b.backoff = d
	b.retryAt = b.now().Add(d)
	b.set(BreakerOpen)
}

// set changes the state and tells the observer whether this is a trip
// (closed to open). Called with mu held.
func (b *breaker) set(s BreakerState) {
	if b.state == s {
		return
	}
	tripped := b.state == BreakerClosed && s == BreakerOpen
	b.state = s
	b.changed(s, tripped)
}

// setProbed says whether a probe watches the upstream.
func (b *breaker) setProbed(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probed = on
}

// lastError is the failure that opened the breaker, or the last trial's.
func (b *breaker) lastError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr
}

// State returns the current state and, when open, when the back-off ends.
func (b *breaker) State() (BreakerState, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.retryAt
}

// begin asks the breaker whether a request may go to the upstream; when it
// may not, the error wraps ErrUnavailable and says why and until when.
func (c *Client) begin(probe bool) (ticket, error) {
	t, err := c.breaker.allow(probe)
	if err != nil {
		return t, &failure{c.name, err.Error(), ErrUnavailable, err}
	}
	return t, nil
}

// end tells the breaker how the request of t ended. A caller's own
// cancellation (parent done) says nothing about the upstream.
func (c *Client) end(parent context.Context, t ticket, err error) {
	o := answered
	switch {
	case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrRangeRefused):
		// A refused range is an answer: the upstream is up.
	case errors.Is(context.Cause(parent), ErrStraggler):
		// The Group gave up on it while the others had answered: failing.
		o, err = failed, ErrStraggler
	case parent.Err() != nil:
		o = abandoned
	default:
		o = failed
	}
	c.breaker.report(t, o, err)
}
