package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// ErrVerify means a downloaded NAR was not what its narinfo promised.
var ErrVerify = errors.New("cache: NAR does not match its narinfo")

// verifyError is an ErrVerify that says which check failed (size, hash).
type verifyError struct {
	check string
	msg   string
}

func (e *verifyError) Error() string { return ErrVerify.Error() + ": " + e.msg }
func (e *verifyError) Unwrap() error { return ErrVerify }

func verifyFailed(check, format string, args ...any) error {
	return &verifyError{check: check, msg: fmt.Sprintf(format, args...)}
}

const narContentType = "application/x-nix-nar"

// ServeNAR answers GET and HEAD for the NAR file called name (already
// validated). A file on disk is served with Range, ETag and sendfile; a NAR
// known from a narinfo but not on disk is fetched once and streamed to every
// client asking meanwhile. HEAD never starts a download. It returns
// ErrNotFound, an error wrapping upstream.ErrUnavailable before any header
// was written, or ErrAborted once the body has started and cannot be
// completed.
func (c *Cache) ServeNAR(w http.ResponseWriter, r *http.Request, name string) error {
	ctx := r.Context()
	f, err := c.store.OpenNAR(ctx, name)
	if err == nil {
		defer f.Close()
		c.metrics.Lookups.WithLabelValues("nar", "hit").Inc()
		return c.serveFile(w, r, name, f)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	c.metrics.Lookups.WithLabelValues("nar", "miss").Inc()
	src, err := c.store.NARSource(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", narContentType)
		if src.Size > 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(src.Size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	// A NAR evicted between its download and this client opening it is
	// fetched again: a client holding its narinfo must never get a 404.
	for range refills {
		fl := c.join(ctx, name, src)
		err = c.follow(w, r, fl, src)
		c.leave(fl)
		if !errors.Is(err, errGone) {
			return err
		}
	}
	return fmt.Errorf("%w: NAR %s was evicted each time it was fetched; the bound is too small for it", upstream.ErrUnavailable, name)
}

// refills bounds how often one request fetches a NAR that is evicted
// before it can be served.
const refills = 3

// errGone means a download ended well but its file was evicted before this
// client opened it.
var errGone = errors.New("cache: NAR evicted before it was served")

func (c *Cache) serveFile(w http.ResponseWriter, r *http.Request, name string, f store.NARFile) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat NAR %s: %w", name, err)
	}
	h := w.Header()
	h.Set("Content-Type", narContentType)
	// The name is the file's own hash: it never changes.
	h.Set("ETag", `"`+name+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, name, st.ModTime(), f)
	c.metrics.ServedBytes.WithLabelValues("cache").Add(float64(cw.n))
	return nil
}

// Downloads lists the NAR downloads in progress.
func (c *Cache) Downloads() []Download {
	c.mu.Lock()
	flights := make([]*flight, 0, len(c.flights))
	for _, fl := range c.flights {
		flights = append(flights, fl)
	}
	c.mu.Unlock()
	out := make([]Download, 0, len(flights))
	for _, fl := range flights {
		d := Download{NAR: fl.name, Upstream: fl.upstream, Size: -1}
		select {
		case <-fl.ready:
			d.Size = fl.size
		default:
		}
		fl.mu.Lock()
		d.Bytes, d.Clients = fl.written, fl.clients
		fl.mu.Unlock()
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Download) int { return strings.Compare(a.NAR, b.NAR) })
	return out
}

// join returns the flight for name, starting the download if none runs;
// the download logs under ctx's request id.
func (c *Cache) join(ctx context.Context, name string, src store.NARSource) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	fl, ok := c.flights[name]
	if !ok {
		fl = newFlight(name)
		fl.upstream = src.Upstream
		c.flights[name] = fl
		c.metrics.Downloads.Inc()
		c.wg.Add(1)
		go c.download(fl, src, reqid.From(ctx))
	}
	fl.mu.Lock()
	fl.clients++
	fl.mu.Unlock()
	c.metrics.DownloadClients.Inc()
	return fl
}

func (c *Cache) leave(fl *flight) {
	fl.mu.Lock()
	fl.clients--
	fl.mu.Unlock()
	c.metrics.DownloadClients.Dec()
}

// follow streams fl's file to w: what has landed so far, then each new
// chunk as it lands, until the download ends. A NAR the download does not
// keep is streamed straight from the upstream instead; one that was kept
// and is gone already is errGone, before anything is written.
func (c *Cache) follow(w http.ResponseWriter, r *http.Request, fl *flight, src store.NARSource) error {
	ctx := r.Context()
	select {
	case <-fl.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if st := fl.state(); st.done && st.err != nil {
		if errors.Is(st.err, errNotKept) {
			return c.passThrough(w, r, fl.name, src)
		}
		return st.err // nothing written yet: the caller can still pick a status
	}
	f, err := fl.openPartial()
	if errors.Is(err, fs.ErrNotExist) {
		// Committed (renamed) or discarded between ready and now, or
		// found in the store by the flight itself.
		if err := fl.wait(ctx); err != nil {
			if errors.Is(err, errNotKept) {
				return c.passThrough(w, r, fl.name, src)
			}
			return err
		}
		f, err = c.store.OpenNAR(ctx, fl.name)
		if errors.Is(err, store.ErrNotFound) {
			return errGone
		}
		if err != nil {
			return err
		}
		defer f.Close()
		return c.serveFile(w, r, fl.name, f)
	}
	if err != nil {
		return fmt.Errorf("open NAR %s: %w", fl.name, err)
	}
	defer f.Close()

	// The status goes out with the first bytes, not before: a download
	// that fails before any is sent (the disk fills up) leaves this
	// client free to get the NAR straight from the upstream.
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", narContentType)
		if fl.size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(fl.size, 10))
		}
		w.WriteHeader(http.StatusOK)
	}
	var sent int64
	// Counted as it goes, so a long download shows on dashboards while it
	// streams rather than all at once at its end.
	served := c.metrics.ServedBytes.WithLabelValues("upstream")
	for {
		st := fl.state()
		written := st.written
		if fl.size > 0 && (!st.done || st.err != nil) {
			// Hold back the last byte until the download has checked out:
			// with all Content-Length bytes sent, aborting the connection
			// no longer tells the client the body is wrong.
			written = min(written, fl.size-1)
		}
		if sent < written {
			start()
			// io.CopyN over an *os.File lets net/http use sendfile.
			n, err := io.CopyN(w, f, written-sent)
			sent += n
			served.Add(float64(n))
			if err != nil {
				return fmt.Errorf("%w: %w", ErrAborted, err)
			}
			continue
		}
		if st.done {
			if st.err != nil {
				if !started && errors.Is(st.err, errNotKept) {
					return c.passThrough(w, r, fl.name, src)
				}
				if !started {
					return st.err
				}
				return fmt.Errorf("%w: %w", ErrAborted, st.err)
			}
			start()
			return nil
		}
		if fl, ok := w.(http.Flusher); ok && started {
			fl.Flush()
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// download fetches fl's NAR from its upstream into the store. It runs
// detached from the clients: the first one hanging up does not stop it.
// id is the request that started it (0 for prefetch), for the log.
func (c *Cache) download(fl *flight, src store.NARSource, id uint64) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.fetchTTL)
	defer cancel()
	start := time.Now()
	n, err := c.fetchNAR(ctx, fl, src)
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
	select {
	case <-fl.ready:
	default:
		close(fl.ready)
	}
	fl.finish(err)
}

func (c *Cache) fetchNAR(ctx context.Context, fl *flight, src store.NARSource) (int64, error) {
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
	// straight from the upstream (see follow).
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
	fl.partial, fl.size = wr, size
	close(fl.ready)

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

// verifyNAR checks a finished download: its size, then its sha256 against
// FileHash, or (without one) the NAR inside it against NarHash.
func verifyNAR(src store.NARSource, size, n int64, sum []byte, check narCheck) error {
	if size >= 0 && n != size {
		return verifyFailed("size", "got %d bytes, expected %d", n, size)
	}
	switch {
	case src.SHA256 != nil:
		if !bytes.Equal(sum, src.SHA256) {
			return verifyFailed("hash", "sha256 mismatch")
		}
	case src.Compression == "none" && src.NarHash != nil:
		if !bytes.Equal(sum, src.NarHash) {
			return verifyFailed("hash", "sha256 is not NarHash")
		}
	case check != nil:
		return check.result()
	}
	return nil
}
