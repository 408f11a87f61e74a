package upstream

import (
	"bytes"
	"context"
	"time"
)

// watch waits for c's breaker to trip, then probes c until it closes
// again, until the Group closes. It logs each outage twice, when it
// starts and when it ends: the lookups skipped meanwhile log nothing
// above debug (see Skipped).
func (g *Group) watch(c *Client) {
	defer c.breaker.setProbed(false) // clients' requests take the trials again
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-c.breaker.tripped:
		}
		start := time.Now()
		attrs := []any{"upstream", c.name, "failures", c.breaker.threshold}
		if err := c.breaker.lastError(); err != nil {
			attrs = append(attrs, "err", reasonOf(err))
		}
		g.log.Warn("upstream unreachable: skipped until it answers again", attrs...)
		if !g.recover(c) {
			return
		}
		g.log.Info("upstream answers again", "upstream", c.name, "down_for", time.Since(start).Round(100*time.Millisecond))
	}
}

// recover probes c whenever its back-off ends, until its breaker closes
// (true) or the Group closes (false). A trial already in flight (a
// client's, from before the probe watched) is waited out.
func (g *Group) recover(c *Client) bool {
	for {
		state, retryAt := c.breaker.State()
		var wait time.Duration
		switch state {
		case BreakerClosed:
			return true
		case BreakerOpen:
			wait = time.Until(retryAt)
		case BreakerHalfOpen:
			wait = c.breaker.backoffMin
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-g.ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		if t, err := c.begin(true); err == nil {
			c.end(g.ctx, t, c.probe(g.ctx))
		}
	}
}

// probeLimit caps the probe's body: nix-cache-info is three short lines.
const probeLimit = 64 << 10

// probe asks c for nix-cache-info, the cheapest answer a binary cache
// gives. Only a real one counts: a captive portal's or a load balancer's
// 200 page is not a cache coming back.
func (c *Client) probe(ctx context.Context) error {
	body, err := c.get(ctx, "nix-cache-info", probeLimit)
	if err != nil {
		return err
	}
	if !bytes.Contains(body, []byte("StoreDir:")) {
		return &failure{c.name, "nix-cache-info: no StoreDir line, not a binary cache", ErrUnavailable, nil}
	}
	return nil
}
