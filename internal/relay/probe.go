package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Run probes the caches until ctx ends: each at once, then the reachable
// ones every CheckInterval and the others with back-off (BackoffMin
// doubling up to BackoffMax). A network change (Options.Changes) or a
// failed forward probes at once and restarts the back-off. It returns
// ctx's error.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, c := range r.configured {
		wg.Go(func() { r.watch(ctx, c) })
	}
	if r.opts.Discovered != nil {
		wg.Go(func() { r.follow(ctx, &wg) })
	}
	if r.opts.Changes != nil {
		wg.Go(func() { r.relayChanges(ctx) })
	}
	wg.Wait()
	return ctx.Err()
}

// relayChanges wakes every cache's prober on each network change. The
// connections kept alive may run over a link that is gone: they are
// dropped, and the next forward dials afresh.
func (r *Relay) relayChanges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-r.opts.Changes:
			if !ok {
				return
			}
		}
		r.metrics.changes.Inc()
		r.fwd.CloseIdleConnections()
		for _, c := range r.list() {
			c.wakeNow(true)
		}
	}
}

// wakeNow asks c's prober to probe at once; fresh restarts its back-off.
func (c *lanCache) wakeNow(fresh bool) {
	if fresh {
		c.fresh.Store(true)
	}
	select {
	case c.wake <- struct{}{}:
	default: // a wake is already pending
	}
}

// watch is c's prober.
func (r *Relay) watch(ctx context.Context, c *lanCache) {
	backoff := r.opts.BackoffMin
	var wait time.Duration // the first probe goes at once
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-c.wake:
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		if c.fresh.Swap(false) {
			backoff = r.opts.BackoffMin
		}
		err := r.probeOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.markUp(c)
			c.probedOnce.Do(func() { close(c.probed) })
			wait, backoff = r.opts.CheckInterval, r.opts.BackoffMin
			continue
		}
		r.markDown(c, err)
		c.probedOnce.Do(func() { close(c.probed) })
		wait, backoff = backoff, min(2*backoff, r.opts.BackoffMax)
	}
}

// probeLimit caps a probe's body: nix-cache-info is three short lines.
const probeLimit = 64 << 10

// probeOnce asks c for nix-cache-info. Only a binary cache's answer counts
// (a captive portal's 200 page is not the cache); it becomes the
// nix-cache-info the relay answers while no cache is reachable.
func (r *Relay) probeOnce(ctx context.Context, c *lanCache) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/nix-cache-info", nil)
	if err != nil {
		return err
	}
	resp, err := r.probe.Do(req)
	if err != nil {
		r.metrics.probes.WithLabelValues(c.name, "error").Inc()
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, probeLimit))
	switch {
	case err != nil:
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("nix-cache-info: %s", resp.Status)
	case !bytes.Contains(body, []byte("StoreDir:")):
		err = fmt.Errorf("nix-cache-info: no StoreDir line, not a binary cache")
	}
	if err != nil {
		r.metrics.probes.WithLabelValues(c.name, "error").Inc()
		return err
	}
	r.metrics.probes.WithLabelValues(c.name, "ok").Inc()
	r.info.Store(&body)
	return nil
}

// markUp takes c as reachable.
func (r *Relay) markUp(c *lanCache) {
	if c.setUp(true) {
		r.metrics.up.WithLabelValues(c.name).Set(1)
		fwd, self := r.tally.take()
		r.log.Info("relay: LAN cache reachable, forwarding", "cache", c.name, "forwarded_before", fwd, "answered_itself_before", self)
	}
}

// markDown takes c as unreachable after err, and has it probed at once
// (a forward's failure may be a passing one).
func (r *Relay) markDown(c *lanCache, err error) {
	if c.setUp(false) {
		r.metrics.up.WithLabelValues(c.name).Set(0)
		fwd, self := r.tally.take()
		r.log.Info("relay: LAN cache unreachable", "cache", c.name, "err", err, "forwarded_before", fwd, "answered_itself_before", self)
		r.fwd.CloseIdleConnections()
		c.wakeNow(false)
	}
}

// tally counts the requests forwarded and answered by the relay itself
// since a cache's reachability last changed: each change's log line says
// what the relay did meanwhile, so the log shows it without a line per
// request.
type tally struct {
	forwarded, self atomic.Int64
}

// take returns the counts and starts them again.
func (t *tally) take() (forwarded, self int64) {
	return t.forwarded.Swap(0), t.self.Swap(0)
}
