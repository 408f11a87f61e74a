package relay

import (
	"context"
	"slices"
	"sync"
)

// follow takes each set of discovered caches from Options.Discovered
// until ctx ends: a cache new to the set is probed from then on (its
// prober counted in wg), one gone from it is dropped, with its prober.
// Configured caches keep their place first; a discovered URL that is
// also configured is not added twice.
func (r *Relay) follow(ctx context.Context, wg *sync.WaitGroup) {
	type running struct {
		c    *lanCache
		stop context.CancelFunc
	}
	found := map[string]running{}
	for {
		var urls []string
		select {
		case <-ctx.Done():
			return
		case u, ok := <-r.opts.Discovered:
			if !ok {
				return
			}
			urls = u
		}
		list := slices.Clone(r.configured)
		keep := map[string]bool{}
		for _, s := range urls {
			if keep[s] || slices.ContainsFunc(r.configured, func(c *lanCache) bool { return c.name == s }) {
				continue
			}
			keep[s] = true
			d, ok := found[s]
			if !ok {
				base, err := parseCacheURL(s)
				if err != nil {
					r.log.Warn("relay: discovered cache refused", "url", s, "err", err)
					continue
				}
				pctx, stop := context.WithCancel(ctx)
				d = running{newLANCache(s, base), stop}
				found[s] = d
				r.metrics.up.WithLabelValues(s).Set(0)
				r.log.Info("relay: LAN cache discovered", "cache", s)
				wg.Go(func() { r.watch(pctx, d.c) })
			}
			list = append(list, d.c)
		}
		for s, d := range found {
			if !keep[s] {
				d.stop()
				d.c.setUp(false)
				d.c.probedOnce.Do(func() { close(d.c.probed) })
				delete(found, s)
				r.metrics.up.DeleteLabelValues(s)
				r.log.Info("relay: discovered LAN cache no longer advertised", "cache", s)
			}
		}
		r.caches.Store(&list)
	}
}
