package upstream

import (
	"context"
	"errors"
	"io"
	"time"
)

// stallBody is a NAR response body that fails a Read which gets no data for
// the client's StallTimeout, and turns transfer errors into ErrUnavailable.
// A whole-transfer deadline would kill large NARs on slow links; a stall
// timer only kills transfers that stopped moving.
type stallBody struct {
	c      *Client
	parent context.Context // the caller's: its cancellation is not an outage
	ctx    context.Context // the request's: its cause says which timer fired
	cancel context.CancelCauseFunc
	body   io.ReadCloser
	timer  *time.Timer
}

func newStallBody(c *Client, parent, ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser) *stallBody {
	b := &stallBody{c: c, parent: parent, ctx: ctx, cancel: cancel, body: body}
	// Cancelling the request context makes the blocked Read return.
	b.timer = time.AfterFunc(c.stall, func() { cancel(errStall) })
	b.timer.Stop()
	return b
}

// Read reads from the upstream, arming the stall timer for the wait.
func (b *stallBody) Read(p []byte) (int, error) {
	if err := context.Cause(b.ctx); errors.Is(err, errStall) {
		// A previous Read returned data just as the timer fired.
		return 0, b.c.requestError(b.parent, b.ctx, err)
	}
	b.timer.Reset(b.c.stall)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if n > 0 {
		b.c.obs.UpstreamFetched(b.c.name, int64(n))
	}
	if err == nil || err == io.EOF {
		// io.EOF must stay unwrapped: readers compare it with ==.
		return n, err
	}
	return n, b.c.requestError(b.parent, b.ctx, err)
}

// Close stops the timer, closes the body and releases the request.
func (b *stallBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel(nil)
	return err
}
