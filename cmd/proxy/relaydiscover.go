package main

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/discovery"
)

// relayDiscovery is the relay's --discover: it asks the LAN for caches
// every interval and after each network change, and tells the relay the
// set it found.
type relayDiscovery struct {
	trusted  []string // --trusted-public-key
	interval time.Duration
	log      *slog.Logger
	// browse is discovery.Browse (tests replace it).
	browse func(context.Context, discovery.BrowseOptions) ([]discovery.Cache, error)
}

// missesToDrop is how many browses in a row may miss a cache before it is
// dropped: one lost multicast answer must not take a cache away.
const missesToDrop = 3

// run browses until ctx ends, sending each changed set of accepted cache
// URLs (sorted) on found.
func (d *relayDiscovery) run(ctx context.Context, found chan<- []string, changes <-chan struct{}) {
	browse := d.browse
	if browse == nil {
		browse = discovery.Browse
	}
	misses := map[string]int{} // URL → browses in a row that missed it
	refused := map[string]bool{}
	var sent []string
	for {
		caches, err := browse(ctx, discovery.BrowseOptions{Logger: d.log})
		if err != nil && ctx.Err() == nil {
			d.log.Debug("relay: discovery", "err", err)
		}
		seen := map[string]bool{}
		for _, c := range caches {
			if !c.Accept(d.trusted) {
				if !refused[c.URL] {
					refused[c.URL] = true
					d.log.Warn("relay: discovered cache refused: it advertises none of the --trusted-public-key keys", "cache", c.URL, "instance", c.Instance, "keys", c.Keys)
				}
				continue
			}
			seen[c.URL] = true
			misses[c.URL] = 0
		}
		for u := range misses {
			if !seen[u] {
				if misses[u]++; misses[u] >= missesToDrop {
					delete(misses, u)
				}
			}
		}
		var urls []string
		for u := range misses {
			urls = append(urls, u)
		}
		slices.Sort(urls)
		if !slices.Equal(urls, sent) {
			select {
			case found <- urls:
				sent = urls
			case <-ctx.Done():
				return
			}
		}
		t := time.NewTimer(d.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changes: // nil without a watcher: never
			t.Stop()
		case <-t.C:
		}
	}
}

// tee copies each value from in to two channels (a pending one absorbs
// the next: changes are hints) until ctx ends.
func tee(ctx context.Context, in <-chan struct{}) (a, b <-chan struct{}) {
	ca, cb := make(chan struct{}, 1), make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-in:
				if !ok {
					return
				}
				for _, c := range []chan struct{}{ca, cb} {
					select {
					case c <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return ca, cb
}
