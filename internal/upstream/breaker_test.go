package upstream

import (
	"errors"
	"testing"
	"time"
)

// fakeClock is a settable clock for the breaker.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

type change struct {
	state   BreakerState
	tripped bool
}

func newTestBreaker(threshold int) (*breaker, *fakeClock, *[]change) {
	clock := &fakeClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	var changes []change
	b := newBreaker(threshold, time.Second, 4*time.Second, func(s BreakerState, tripped bool) {
		changes = append(changes, change{s, tripped})
	})
	b.now = clock.now
	return b, clock, &changes
}

// send runs one request through b with outcome o and fails the test if
// the breaker's permission is not want.
func send(t *testing.T, b *breaker, o outcome, want bool) {
	t.Helper()
	tk, err := b.allow(false)
	if (err == nil) != want {
		t.Fatalf("allow() = %v, want allowed=%v", err, want)
	}
	if err == nil {
		b.report(tk, o, errors.New("boom"))
	}
}

func wantState(t *testing.T, b *breaker, want BreakerState) {
	t.Helper()
	if got, _ := b.State(); got != want {
		t.Fatalf("state %v, want %v", got, want)
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	b, _, changes := newTestBreaker(3)
	send(t, b, failed, true)
	send(t, b, failed, true)
	send(t, b, answered, true) // an answer (404 too) resets the count
	send(t, b, failed, true)
	send(t, b, failed, true)
	send(t, b, abandoned, true) // a caller's cancellation neither counts nor resets
	wantState(t, b, BreakerClosed)
	send(t, b, failed, true)
	wantState(t, b, BreakerOpen)
	_, err := b.allow(false)
	var open *errOpen
	if !errors.As(err, &open) || open.retryIn != time.Second {
		t.Fatalf("allow() while open = %v, want errOpen with 1s to go", err)
	}
	if want := "skipped: down after 3 failures in a row, next try in 1s (last: boom)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if want := []change{{BreakerOpen, true}}; len(*changes) != 1 || (*changes)[0] != want[0] {
		t.Errorf("changes %v, want %v", *changes, want)
	}
	select {
	case <-b.tripped:
	default:
		t.Error("trip not signalled to the prober")
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	b, clock, changes := newTestBreaker(1)
	send(t, b, failed, true)
	wantState(t, b, BreakerOpen)

	// Back-offs double after each failed trial and stop at the cap (4s).
	for _, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		clock.advance(backoff - time.Millisecond)
		send(t, b, failed, false)
		clock.advance(time.Millisecond)
		tk, err := b.allow(false)
		if err != nil || !tk.trial {
			t.Fatalf("after %v: allow() = %+v, %v; want the trial", backoff, tk, err)
		}
		wantState(t, b, BreakerHalfOpen)
		send(t, b, answered, false) // one trial at a time
		b.report(tk, failed, errors.New("still down"))
		wantState(t, b, BreakerOpen)
	}

	// An abandoned trial waits the same back-off again, no longer.
	clock.advance(4 * time.Second)
	tk, _ := b.allow(false)
	b.report(tk, abandoned, nil)
	clock.advance(4*time.Second - time.Millisecond)
	send(t, b, answered, false)
	clock.advance(time.Millisecond)

	// A successful trial closes it and resets the back-off.
	send(t, b, answered, true)
	wantState(t, b, BreakerClosed)
	send(t, b, failed, true)
	if _, retryAt := b.State(); retryAt != clock.now().Add(time.Second) {
		t.Errorf("back-off after a new trip ends %v, want 1s from now", retryAt.Sub(clock.now()))
	}
	trips := 0
	for _, c := range *changes {
		if c.tripped {
			trips++
		}
	}
	if trips != 2 {
		t.Errorf("%d trips reported, want 2 (closed→open only): %v", trips, *changes)
	}
}

func TestBreakerIgnoresStaleReports(t *testing.T) {
	b, clock, _ := newTestBreaker(2)
	slow, _ := b.allow(false) // issued while closed, ends after the trip
	send(t, b, failed, true)
	send(t, b, failed, true)
	wantState(t, b, BreakerOpen)
	b.report(slow, answered, nil)
	wantState(t, b, BreakerOpen)
	clock.advance(time.Second)
	send(t, b, answered, true)
	wantState(t, b, BreakerClosed)
	b.report(slow, failed, errors.New("late")) // from before the trip
	send(t, b, failed, true)
	wantState(t, b, BreakerClosed) // one fresh failure of two
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[BreakerState]string{
		BreakerClosed: "closed", BreakerOpen: "open", BreakerHalfOpen: "half-open", 7: "BreakerState(7)",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s, want)
		}
	}
}

// TestBreakerProbeOwnsTrial: while a Group's probe watches, no client
// request is the trial (which could cost its lookup a whole Timeout).
func TestBreakerProbeOwnsTrial(t *testing.T) {
	b, clock, _ := newTestBreaker(1)
	b.setProbed(true)
	send(t, b, failed, true)
	clock.advance(time.Hour)
	send(t, b, answered, false)
	tk, err := b.allow(true)
	if err != nil || !tk.trial {
		t.Fatalf("probe: allow(true) = %+v, %v; want the trial", tk, err)
	}
	b.report(tk, answered, nil)
	wantState(t, b, BreakerClosed)
}
