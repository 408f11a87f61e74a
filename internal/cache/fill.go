package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// fill fetches fl's NAR from its upstream into the store, then finishes
// fl: it is the one owner of the flight's state. It runs detached from the
// clients: the first one hanging up does not stop it. id is the request
// that started it (0 for prefetch), for the log.
func (c *Cache) fill(fl *flight, src store.NARSource, id uint64) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.fetchTTL)
	defer cancel()
	start := time.Now()
	n, err := c.fetchToStore(ctx, fl, src)
	// path is the URL path asked of the upstream (never its query).
	path := src.URL
	if u, perr := url.Parse(src.URL); perr == nil {
		path = u.Path
	}
	attrs := []any{reqid.Attr(id), "path", path, "store_path", src.StorePath, "upstream", src.Upstream,
		"bytes", n, "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		var verr *verifyError
		outcome := "error"
		switch {
		case errors.As(err, &verr):
			outcome = "verify-failed"
			c.metrics.VerifyFailures.WithLabelValues(verr.check).Inc()
		case errors.Is(err, ErrNotFound):
			outcome = "not-found"
		case errors.Is(err, errNotKept):
			outcome = "not-kept"
		}
		c.log.Warn("upstream NAR", append(attrs, "outcome", outcome, "err", err)...)
	} else if n > 0 { // 0: the flight found it stored, nothing was fetched
		c.log.Info("upstream NAR", append(attrs, "outcome", "fetched")...)
		if src.Hash != "" {
			c.misses.Record(store.MissEvent{Hash: src.Hash, Outcome: store.OutcomeFetched,
				StorePath: src.StorePath, Upstream: src.Upstream, Bytes: n})
		}
	}
	// Leave the map before finishing: a request arriving after this finds
	// the committed file in the store, or starts a fresh download on error.
	c.mu.Lock()
	delete(c.flights, fl.name)
	c.mu.Unlock()
	c.metrics.Downloads.Dec()
	fl.finish(err)
}

// fetchToStore is the one GET of a kept NAR from its upstream: it writes
// the body to a part file, publishing each chunk to fl's followers, checks
// it against the narinfo and commits it. It returns the bytes fetched.
func (c *Cache) fetchToStore(ctx context.Context, fl *flight, src store.NARSource) (int64, error) {
	// A request that missed the store just before the previous download
	// of this NAR committed starts a flight of its own: no need to fetch.
	if f, err := c.store.OpenNAR(ctx, fl.name); err == nil {
		return 0, f.Close()
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	client, ok := c.clients[src.Upstream]
	if !ok {
		return 0, fmt.Errorf("%w: upstream %s is no longer configured", ErrNotFound, src.Upstream)
	}
	loc, err := url.Parse(src.URL)
	if err != nil {
		return 0, fmt.Errorf("NAR source URL: %w", err)
	}
	// Room first: a NAR that cannot be kept is streamed to each client
	// straight from the upstream (see serveFlight).
	release, err := c.room.Reserve(ctx, src.Size)
	if err != nil {
		c.metrics.NARNotKept.WithLabelValues("no-room").Inc()
		return 0, fmt.Errorf("%w: %w", errNotKept, err)
	}
	var kept bool
	var writeErr error
	defer func() { release(kept, writeErr) }()
	body, size, err := client.NAR(ctx, loc)
	if errors.Is(err, upstream.ErrNotFound) {
		return 0, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if src.Size > 0 {
		if size >= 0 && size != src.Size {
			return 0, verifyFailed("size", "upstream sends %d bytes, FileSize is %d", size, src.Size)
		}
		size = src.Size
	}
	wr, err := c.store.CreateNAR(ctx, fl.name)
	if err != nil {
		writeErr = err
		c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
		return 0, fmt.Errorf("%w: %w", errNotKept, err)
	}
	defer wr.Cancel()
	fl.start(wr, size)

	check := newNARCheck(src)
	if check != nil {
		defer check.result() // after h.stop below: no more writes
	}
	h := newHasher(check)
	defer h.stop()
	var n int64
	for {
		buf := h.buffer()
		k, rerr := body.Read(buf)
		if k > 0 {
			if size >= 0 && n+int64(k) > size {
				return n, verifyFailed("size", "upstream sent more than %d bytes", size)
			}
			if _, err := wr.Write(buf[:k]); err != nil {
				// ENOSPC, EIO: the clients that have bytes already are cut
				// cleanly, the others stream it from the upstream; nothing
				// of it is indexed (the deferred Cancel).
				writeErr = err
				c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
				return n, fmt.Errorf("%w: write: %w", errNotKept, err)
			}
			h.write(buf[:k])
			n += int64(k)
			fl.progress(int64(k))
		} else {
			h.release(buf)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	sum := h.sum()
	if err := verifyNAR(src, size, n, sum, check); err != nil {
		return n, err
	}
	if err := wr.Commit(ctx); err != nil {
		if ctx.Err() == nil {
			writeErr = err
			c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
			return n, fmt.Errorf("%w: %w", errNotKept, err)
		}
		return n, err
	}
	kept = true
	return n, nil
}
