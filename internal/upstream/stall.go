package upstream

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// stallBody is a NAR response body that fails a Read which gets no data for
// the client's StallTimeout, and turns transfer errors into ErrUnavailable.
// A whole-transfer deadline would kill large NARs on slow links; a stall
// timer only kills transfers that stopped moving.
//
// It reports the request to the Observer once the body ends: as an error
// if the transfer broke or stalled, else (at EOF, or when the caller
// closes it early) as ok; the duration is still the wait for the headers.
type stallBody struct {
	c        *Client
	parent   context.Context // the caller's: its cancellation is not an outage
	ctx      context.Context // the request's: its cause says which timer fired
	cancel   context.CancelCauseFunc
	body     io.ReadCloser
	timer    *time.Timer
	headers  time.Duration
	observed sync.Once
}

func newStallBody(c *Client, parent, ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, headers time.Duration) *stallBody {
	b := &stallBody{c: c, parent: parent, ctx: ctx, cancel: cancel, body: body, headers: headers}
	// Cancelling the request context makes the blocked Read return.
	b.timer = time.AfterFunc(c.stall, func() { cancel(errStall) })
	b.timer.Stop()
	return b
}

// Read reads from the upstream, arming the stall timer for the wait.
func (b *stallBody) Read(p []byte) (int, error) {
	if err := context.Cause(b.ctx); errors.Is(err, errStall) {
		// A previous Read returned data just as the timer fired.
		return 0, b.end(b.c.requestError(b.parent, b.ctx, err))
	}
	b.timer.Reset(b.c.stall)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if n > 0 {
		b.c.obs.UpstreamFetched(b.c.name, int64(n))
	}
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		// io.EOF must stay unwrapped: readers compare it with ==.
		b.end(nil)
		return n, err
	}
	return n, b.end(b.c.requestError(b.parent, b.ctx, err))
}

// end reports the request with the body's outcome, once, and returns err.
func (b *stallBody) end(err error) error {
	b.observed.Do(func() { b.c.observeAfter(b.parent, "nar", b.headers, err) })
	return err
}

// Close stops the timer, closes the body and releases the request.
func (b *stallBody) Close() error {
	b.end(nil)
	b.timer.Stop()
	err := b.body.Close()
	b.cancel(nil)
	return err
}
