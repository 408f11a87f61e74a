package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/discovery"
)

// TestRelayDiscovery: caches not advertising a trusted key are refused,
// a cache missed by fewer than missesToDrop browses in a row stays, and
// each change of the set is sent once.
func TestRelayDiscovery(t *testing.T) {
	a := discovery.Cache{URL: "http://10.0.0.1:5575", Keys: []string{"lan-1:x"}}
	b := discovery.Cache{URL: "http://10.0.0.2:5575", Keys: []string{"lan-1:x", "other:y"}}
	rogue := discovery.Cache{URL: "http://10.0.0.66:5575", Keys: []string{"rogue:z"}}
	rounds := [][]discovery.Cache{
		{a, rogue},
		{a, b, rogue},
		{b}, // a missed once
		{b}, // twice
		{b}, // three times: dropped
	}
	next := make(chan struct{})
	i := 0
	d := &relayDiscovery{
		trusted:  []string{"lan-1:x"},
		interval: time.Hour,
		log:      slog.New(slog.DiscardHandler),
		browse: func(ctx context.Context, _ discovery.BrowseOptions) ([]discovery.Cache, error) {
			if i > 0 {
				select {
				case <-next:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if i >= len(rounds) {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			i++
			return rounds[i-1], nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	found := make(chan []string)
	changes := make(chan struct{})
	go d.run(ctx, found, changes)
	recv := func() []string {
		t.Helper()
		select {
		case u := <-found:
			return u
		case <-time.After(5 * time.Second):
			t.Fatal("no set sent")
			return nil
		}
	}
	// A network change browses again at once (the interval is an hour).
	browse := func() {
		t.Helper()
		select {
		case changes <- struct{}{}:
			next <- struct{}{}
		case u := <-found:
			t.Fatalf("set %q sent, none expected", u)
		}
	}
	if got := recv(); !cmp.Equal(got, []string{a.URL}) {
		t.Errorf("round 1: %q", got)
	}
	browse()
	if got := recv(); !cmp.Equal(got, []string{a.URL, b.URL}) {
		t.Errorf("round 2: %q", got)
	}
	browse()
	browse()
	browse()
	if got := recv(); !cmp.Equal(got, []string{b.URL}) {
		t.Errorf("round 5: %q, want a dropped after three misses", got)
	}
}
