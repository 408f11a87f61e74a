package discovery

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/mdns"
)

// BrowseOptions configure one Browse.
type BrowseOptions struct {
	// Timeout is how long answers are collected (default 1s).
	Timeout time.Duration
	// Interface, if not nil, is the one interface to ask on.
	Interface *net.Interface
	Logger    *slog.Logger
}

// Browse asks the network once for caches and returns those that
// answered within the timeout, each once, IPv4 addresses preferred.
func Browse(ctx context.Context, opts BrowseOptions) ([]Cache, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	// The query runs on the caller's goroutine (its sockets are opened
	// on the caller's thread: tests browse from inside a network
	// namespace); answers are collected beside it. The module drops
	// answers the channel has no room for, hence the buffer.
	entries := make(chan *mdns.ServiceEntry, 64)
	collected := make(chan []Cache, 1)
	go func() {
		var found []Cache
		seen := map[string]bool{}
		for e := range entries {
			ip := e.AddrV4
			if ip == nil && e.AddrV6IPAddr != nil {
				ip = e.AddrV6IPAddr.IP
			}
			c, ok := cacheOf(e.Name, ip, e.Port, e.InfoFields)
			if !ok || seen[c.URL] {
				continue
			}
			seen[c.URL] = true
			found = append(found, c)
		}
		collected <- found
	}()
	err := mdns.QueryContext(ctx, &mdns.QueryParam{
		Service:   Service,
		Domain:    "local",
		Timeout:   opts.Timeout,
		Interface: opts.Interface,
		Entries:   entries,
		Logger:    stdLogger(opts.Logger),
		// Asked over IPv4 only: the module fails the whole query when one
		// family cannot send (an interface with no IPv6 route yet), and a
		// LAN cache is reached over IPv4 anyway. Answers may carry both.
		DisableIPv6: true,
	})
	close(entries)
	found := <-collected
	if err != nil && ctx.Err() == nil {
		return found, err
	}
	return found, nil
}
