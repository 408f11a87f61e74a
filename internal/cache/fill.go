package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	end := c.active.begin()
	defer end()
	ctx, cancel := context.WithTimeout(c.ctx, c.fetchTTL)
	defer cancel()
	start := time.Now()
	var n int64
	var err error
	if src.From != "" {
		n, err = c.rebuildToStore(ctx, fl, src) // a recompressed NAR: rebuild.go
	} else {
		n, err = c.fetchToStore(ctx, fl, src)
	}
	// path is the URL path asked of the upstream (never its query).
	path := src.URL
	if u, perr := url.Parse(src.URL); perr == nil {
		path = u.Path
	}
	msg := "upstream NAR"
	if src.From != "" {
		msg = "rebuild recompressed NAR"
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
			c.stats.verifyFailed(verr.check)
			if src.Hash != "" && src.From == "" {
				// The miss log says why the path is still not served.
				c.misses.Record(store.MissEvent{Hash: src.Hash, Outcome: refusedOutcome(verr.check), Reason: Reason(err),
					StorePath: src.StorePath, Upstream: src.Upstream})
			}
		case errors.Is(err, ErrNotFound):
			outcome = "not-found"
		case errors.Is(err, errNotKept):
			outcome = "not-kept"
		}
		level := slog.LevelWarn
		if Skipped(err) {
			// Its upstream is down, logged once when its breaker opened.
			level, outcome = slog.LevelDebug, "skipped"
		}
		c.log.Log(ctx, level, msg, append(attrs, "outcome", outcome, "err", err)...)
	} else if n > 0 && src.From == "" { // 0: the flight found it stored, nothing was fetched
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
	if err == nil && n > 0 {
		c.afterFill(fl.name, src)
	}
}

// sourceOf is the upstream client src's NAR comes from and its URL. An
// upstream no longer configured is an error wrapping kind: ErrNotFound for
// a download, ErrAborted for a response already under way. (src.URL was
// made by url.URL.String, so parsing it again does not fail.)
func (c *Cache) sourceOf(src store.NARSource, kind error) (*upstream.Client, *url.URL, error) {
	client, ok := c.clients[src.Upstream]
	if !ok {
		return nil, nil, fmt.Errorf("%w: upstream %s is no longer configured", kind, src.Upstream)
	}
	loc, err := url.Parse(src.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: NAR source URL: %w", kind, err)
	}
	return client, loc, nil
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
	client, loc, err := c.sourceOf(src, ErrNotFound)
	if err != nil {
		return 0, err
	}
	// Room first: a NAR that cannot be kept is streamed to each client
	// straight from the upstream (see serveFlight). Without FileSize the
	// room held is NarSize: a compressed NAR is at most about that, and
	// the reservation grows with the bytes if it is more.
	held := reserveSize(src)
	grow, release, err := c.room.Reserve(ctx, held)
	if err != nil {
		c.metrics.NARNotKept.WithLabelValues("no-room").Inc()
		return 0, fmt.Errorf("%w: %w", errNotKept, err)
	}
	var kept bool
	var writeErr error
	defer func() { release(kept, writeErr) }()
	// A large NAR lands where a restart finds it, with a note of how far
	// it got: the next fetch carries on from there.
	var (
		wr      *store.Writer
		resumed *fetchNote
		first   *upstream.NARPart
		size    = src.Size
	)
	// Not in a fleet: there the files are shared, and the lease (see
	// openBody) says who fills.
	if src.Size >= c.fetch.Threshold && c.fleet == nil {
		var note []byte
		wr, note, _, err = c.store.CreateResumableNAR(ctx, fl.name, func(note []byte) bool {
			return parseNote(note, src.Size) != nil
		})
		if err != nil {
			writeErr = err
			c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
			return 0, fmt.Errorf("%w: %w", errNotKept, err)
		}
		resumed = parseNote(note, src.Size)
	}
	suspend := false // keep the part file for a later try, not Cancel it
	defer func() {
		if wr != nil && suspend {
			wr.Suspend()
		} else if wr != nil {
			wr.Cancel()
		}
	}()
	fromPeer := false
	if resumed == nil {
		// A NAR to fetch in segments asks only for its first one: the
		// rest of a whole body, closed at the segment's end, would come
		// anyway, as far as the socket buffers reach.
		firstEnd := int64(-1)
		if n := c.fetch.Connections; src.Size >= c.fetch.Threshold && n > 1 && c.fleet == nil {
			firstEnd = split(src.Size, n)[0].end
		}
		p, done, peer, err := c.openBody(ctx, fl.name, client, loc, firstEnd)
		if errors.Is(err, upstream.ErrRangeRefused) {
			done()
			p, done, peer, err = c.openBody(ctx, fl.name, client, loc, -1)
		}
		fromPeer = peer
		if errors.Is(err, errStoredMeanwhile) {
			return 0, nil
		}
		defer done() // after the Commit below
		if errors.Is(err, upstream.ErrNotFound) {
			return 0, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if err != nil {
			suspend = true
			return 0, err
		}
		first = &p
		defer first.Body.Close() // the fetch closes it too: Close twice is harmless
		size = first.Size
		if src.Size == 0 && size > held {
			held = size // Content-Length says more than NarSize
			grow(held)
		}
		if src.Size > 0 {
			if size >= 0 && size != src.Size {
				return 0, verifyFailed("size", "upstream sends %d bytes, FileSize is %d", size, src.Size)
			}
			size = src.Size
		}
	}
	if wr == nil {
		create := c.store.CreateNAR
		if fromPeer {
			// The peer writes it to the shared storage: this proxy only
			// spools it for its own clients, and indexes the peer's copy.
			create = c.store.CreateJoinedNAR
		}
		if wr, err = create(ctx, fl.name); err != nil {
			writeErr = err
			c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
			return 0, fmt.Errorf("%w: %w", errNotKept, err)
		}
	}
	readBack, err := wr.OpenPartial()
	if err != nil {
		writeErr = err
		c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
		return 0, fmt.Errorf("%w: %w", errNotKept, err)
	}
	defer readBack.Close()
	fl.start(wr, size)

	check := newNARCheck(src)
	if check != nil {
		defer check.result() // after h.stop below: no more writes
	}
	h := newPrefixHash(readBack, check)
	defer h.stop()
	f := &rangeFetch{
		client: client, orig: loc, final: loc, size: size, out: wr,
		backoff: c.fetch.Backoff,
		segs:    []*segment{{end: size, state: segLive}},
		save:    wr.SaveNote,
		mark:    wr.MarkNote,
		every:   c.fetch.NoteEvery,
	}
	var published int64
	f.grew = func(p int64) {
		if p > held {
			held = p
			grow(held)
		}
		fl.progress(p - published)
		published = p
		h.grow(p)
	}
	switch {
	case resumed != nil:
		// Ranges it took when the note was saved: it takes them still.
		f.retries, f.segs = c.fetch.Retries, resumed.segments()
	case first.Ranges || first.Ranged:
		// Resume only from an upstream that says it takes ranges: asking
		// another would fetch the whole NAR again.
		f.retries, f.final = c.fetch.Retries, first.URL
		if n := c.fetch.Connections; size >= c.fetch.Threshold && n > 1 && wr.RandomAccess() {
			f.segs = split(size, n)
		}
	default:
		f.save = nil // no resuming from this upstream
	}
	err = f.run(ctx, first)
	n := f.Fetched()
	var wf *writeFailed
	if errors.As(err, &wf) {
		// ENOSPC, EIO: the clients that have bytes already carry on
		// from the upstream with a range (carryOn), the others stream it
		// from the upstream; nothing of it is indexed (the deferred
		// Cancel).
		writeErr = wf.err
		c.metrics.NARNotKept.WithLabelValues("disk-error").Inc()
		return n, fmt.Errorf("%w: %w", errNotKept, err)
	}
	if err != nil {
		var verr *verifyError
		// Kept for a later try unless the bytes were wrong or the upstream
		// no longer takes ranges (a resume would fail the same way).
		suspend = f.save != nil && !errors.As(err, &verr) && !errors.Is(err, upstream.ErrRangeRefused)
		return n, err
	}
	sum, hashed, err := h.result()
	if err != nil {
		return n, fmt.Errorf("read back NAR %s: %w", fl.name, err)
	}
	if err := verifyNAR(src, size, hashed, sum, check); err != nil {
		return n, err
	}
	fl.verify() // the clients' last byte goes now, the commit's fsyncs after
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

// reserveSize is the room to hold before fetching src: its FileSize, else
// its NarSize (a compressed NAR is rarely larger than the NAR inside, and
// the reservation grows if it is), else nothing.
func reserveSize(src store.NARSource) int64 {
	if src.Size > 0 {
		return src.Size
	}
	return src.NarSize
}
