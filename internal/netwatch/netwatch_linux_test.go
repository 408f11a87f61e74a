package netwatch

import (
	"context"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/netnstest"
)

// TestWatchTellsAddressAndLinkChanges, in a namespace of its own: adding
// an address and taking a link down are each told.
func TestWatchTellsAddressAndLinkChanges(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	var ch <-chan struct{}
	if err := netnstest.Do(ns, func() (err error) {
		ch, err = Watch(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	expect := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change told after %s", what)
		}
	}
	quiet := func() {
		t.Helper()
		for {
			select {
			case <-ch:
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	}
	quiet()
	netnstest.Run(t, ns, "ip", "addr", "add", "10.231.9.1/32", "dev", "lo")
	expect("an address added")
	quiet()
	netnstest.Run(t, ns, "ip", "link", "set", "lo", "down")
	expect("a link taken down")
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after the context ended")
	}
}
