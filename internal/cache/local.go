package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// Entry is a narinfo this cache serves, with the facts prefetch and check
// need about it.
type Entry struct {
	Info    *narinfo.Info
	NARName string // the NAR's local name, from the served URL
}

// Lookup returns hash's entry, asking the upstreams on a miss like NarInfo.
// It is for the proxy's own work (prefetch), so it does not count as a
// client asking in the miss log, though what it finds is recorded.
func (c *Cache) Lookup(ctx context.Context, hash string) (Entry, error) {
	return c.entry(ctx, hash, false)
}

// Find is Lookup for the proxy's questions about many paths at once
// (coverage, warm): a "not found" remembered from an earlier lookup is
// the answer, as for a client's request, without asking the upstreams
// again; what the upstreams answer is stored or remembered as usual.
func (c *Cache) Find(ctx context.Context, hash string) (Entry, error) {
	return c.entry(ctx, hash, true)
}

func (c *Cache) entry(ctx context.Context, hash string, remembered bool) (Entry, error) {
	text, err := c.store.NarInfo(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		if neg := c.remembered(hash); neg != nil && remembered {
			return Entry{}, neg
		}
		var got lookedUp
		got, err = c.lookup(ctx, hash)
		c.record(hash, false, got, err)
		text = got.text
	}
	if err != nil {
		return Entry{}, err
	}
	return parseEntry(text)
}

// LocalEntry returns hash's entry from the store alone, or ErrNotFound.
func (c *Cache) LocalEntry(ctx context.Context, hash string) (Entry, error) {
	text, err := c.store.NarInfo(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, err
	}
	return parseEntry(text)
}

func parseEntry(text []byte) (Entry, error) {
	ni, err := narinfo.Parse(text)
	if err != nil {
		return Entry{}, fmt.Errorf("stored narinfo: %w", err)
	}
	name, ok := strings.CutPrefix(ni.URL, "nar/")
	if !ok || !narinfo.ValidNARName(name) {
		return Entry{}, fmt.Errorf("stored narinfo has URL %q, not one of ours", ni.URL)
	}
	return Entry{Info: ni, NARName: name}, nil
}

// HasNAR reports whether the NAR called name is on disk.
func (c *Cache) HasNAR(ctx context.Context, name string) (bool, error) {
	return c.store.HasNAR(ctx, name)
}

// EnsureNAR brings the NAR called name onto disk, joining the download in
// progress if there is one. progress, if not nil, is called as bytes land
// with the bytes so far and the expected total (-1 when unknown). It
// returns ErrNotFound when no narinfo names this NAR.
func (c *Cache) EnsureNAR(ctx context.Context, name string, progress func(done, total int64)) error {
	if ok, err := c.store.HasNAR(ctx, name); err != nil || ok {
		return err
	}
	src, err := c.narSource(ctx, name)
	if err != nil {
		return err
	}
	fl := c.join(ctx, name, src)
	defer c.leave(fl)
	last, err := fl.watch(ctx, func(v flightView) error {
		if progress != nil && v.state != fetching {
			progress(v.written, v.size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return last.err
}

// AskUpstreams reports which upstream has hash with a narinfo this cache
// would accept, and that narinfo, without keeping anything. Errors are as
// for NarInfo.
func (c *Cache) AskUpstreams(ctx context.Context, hash string) (string, *narinfo.Info, error) {
	ans, err := c.upstreams.NarInfo(ctx, hash, func(u *upstream.Client, body []byte) error {
		_, _, _, err := c.admit(u, hash, body)
		return err
	})
	if err != nil {
		if errors.Is(err, upstream.ErrNotFound) {
			return "", nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return "", nil, err
	}
	ni, err := narinfo.Parse(ans.Body)
	return ans.Client.String(), ni, err
}

// Forget drops the remembered "not found" for hash, so the next lookup asks
// the upstreams again.
func (c *Cache) Forget(hash string) {
	c.negative.forget(hash)
}

// Stored tells the cache that hash was stored by other means than its own
// fetch (an upload): the "not found" remembered for it is dropped, and so
// is its miss log row, so neither a client nor the watcher asks the
// upstreams about it again.
func (c *Cache) Stored(hash string) {
	c.negative.forget(hash)
	c.misses.Record(store.MissEvent{Hash: hash, Stored: true})
}
