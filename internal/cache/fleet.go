package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// Fleet coordinates fills with the other proxies on the same shared
// storage (internal/fleet), so the upstream is asked once per NAR across
// all of them. Nil for a proxy alone.
type Fleet interface {
	// Claim is asked before a NAR is fetched from its upstream. It
	// returns one of: Release set (this proxy fills it and calls Release
	// when done), Peer set (another proxy is filling it: stream this), or
	// Stored (it is in the shared storage now). An error means the fleet
	// could not be asked; the proxy then fetches the NAR itself.
	Claim(ctx context.Context, name string) (Claim, error)
}

// Claim is a Fleet's answer; see Fleet.Claim.
type Claim struct {
	Release func()
	Peer    io.ReadCloser
	Size    int64 // of Peer's body; -1 when unknown
	Stored  bool
}

// errStoredMeanwhile means another proxy stored the NAR while this one
// was about to fetch it.
var errStoredMeanwhile = errors.New("cache: NAR stored by another proxy")

// openBody opens the NAR's body: from the proxy already filling it when
// there is one (peer is then true: that proxy writes it to the shared
// storage), else from its upstream. done is to be called once the body
// is consumed and the file committed or dropped.
func (c *Cache) openBody(ctx context.Context, name string, client *upstream.Client, loc *url.URL, end int64) (first upstream.NARPart, done func(), peer bool, err error) {
	done = func() {}
	if c.fleet != nil {
		claim, err := c.fleet.Claim(ctx, name)
		switch {
		case err != nil:
			c.log.Warn("fleet: could not claim the fill, fetching from the upstream", "nar", name, "err", err)
		case claim.Stored:
			return first, done, false, errStoredMeanwhile
		case claim.Peer != nil:
			// No ranges: a peer's body that breaks fails this fill, and
			// the clients' retry decides again who fetches.
			return upstream.NARPart{Body: claim.Peer, Size: claim.Size, URL: loc, End: claim.Size}, done, true, nil
		case claim.Release != nil:
			done = claim.Release
		}
	}
	first, err = client.FetchNAR(ctx, loc, 0, end)
	if err != nil {
		done()
		return first, func() {}, false, err
	}
	return first, done, false, nil
}

// ServeFill answers a peer proxy on the same shared storage that asks for
// a NAR this proxy is filling: it joins the flight as a local client
// would, so the upstream is asked once. It never starts a download, and
// never asks a peer: without a flight or the stored NAR it is ErrNotFound,
// and the peer decides again.
func (c *Cache) ServeFill(w http.ResponseWriter, r *http.Request, name string) error {
	ctx := r.Context()
	c.mu.Lock()
	_, filling := c.flights[name]
	c.mu.Unlock()
	if !filling {
		f, err := c.store.OpenNAR(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		defer f.Close()
		return c.serveStored(w, r, name, f)
	}
	src, err := c.narSource(ctx, name)
	if err != nil {
		return err
	}
	fl := c.join(ctx, name, src)
	defer c.leave(fl)
	return c.serveFlight(w, r, fl, src)
}
