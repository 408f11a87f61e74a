package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// verifyError is an ErrVerify that says which check failed (size, hash).
type verifyError struct {
	check string
	msg   string
}

func (e *verifyError) Error() string { return ErrVerify.Error() + ": " + e.msg }
func (e *verifyError) Unwrap() error { return ErrVerify }

// refusedOutcome is the miss log's outcome of a NAR that failed check.
func refusedOutcome(check string) string {
	if check == "size" {
		return store.OutcomeRefusedSize
	}
	return store.OutcomeRefusedHash
}

func verifyFailed(check, format string, args ...any) error {
	return &verifyError{check: check, msg: fmt.Sprintf(format, args...)}
}

const narContentType = "application/x-nix-nar"

// ServeNAR answers GET and HEAD for the NAR file called name (already
// validated). A file on disk is served with Range, ETag and sendfile; a NAR
// known from a narinfo but not on disk is fetched once and streamed to every
// client asking meanwhile. HEAD never starts a download. It returns
// ErrNotFound, an error wrapping ErrUnavailable before any header
// was written, or ErrAborted once the body has started and cannot be
// completed.
func (c *Cache) ServeNAR(w http.ResponseWriter, r *http.Request, name string) error {
	ctx := r.Context()
	if r.Method != http.MethodHead {
		defer c.active.begin()()
	}
	f, err := c.store.OpenNAR(ctx, name)
	if err == nil {
		defer f.Close()
		c.metrics.Lookups.WithLabelValues("nar", "hit").Inc()
		c.stats.narHits.Add(1)
		return c.serveStored(w, r, name, f)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	c.metrics.Lookups.WithLabelValues("nar", "miss").Inc()
	c.stats.narMisses.Add(1)
	src, err := c.narSource(ctx, name)
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
		err = c.serveFlight(w, r, fl, src)
		c.leave(fl)
		if !errors.Is(err, errGone) {
			return err
		}
	}
	return fmt.Errorf("%w: NAR %s was evicted each time it was fetched; the bound is too small for it", ErrUnavailable, name)
}

// narSource is where the NAR name comes from: ErrNotFound when no
// narinfo names it.
func (c *Cache) narSource(ctx context.Context, name string) (store.NARSource, error) {
	src, err := c.store.NARSource(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return src, ErrNotFound
	}
	return src, err
}

// refills bounds how often one request fetches a NAR that is evicted
// before it can be served.
const refills = 3

// errGone means a download ended well but its file was evicted before this
// client opened it.
var errGone = errors.New("cache: NAR evicted before it was served")

// serveStored serves f, the committed NAR name, from disk.
func (c *Cache) serveStored(w http.ResponseWriter, r *http.Request, name string, f store.NARFile) error {
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
	c.stats.servedCache.Add(cw.n)
	c.countSaved(context.WithoutCancel(r.Context()), name, cw.n, st.Size())
	return nil
}

// countSaved counts what a hit spared the upstream: served bytes of the
// file name, of size bytes, in the upstream's file's size. A recompressed
// NAR's zstd file is often larger than the xz file its upstream sends, so
// counting the bytes served would claim more than the link was spared.
// An upload spares no upstream anything; a row that does not say what the
// upstream's file weighs counts nothing rather than a guess.
func (c *Cache) countSaved(ctx context.Context, name string, served, size int64) {
	if served <= 0 || size <= 0 {
		return
	}
	src, err := c.store.NARSource(ctx, name)
	if err != nil || src.Upstream == store.UploadedUpstream {
		return
	}
	upstreamSize := size
	if src.From != "" {
		orig, err := c.store.NARSource(ctx, src.From)
		if err != nil || orig.Size <= 0 {
			return
		}
		upstreamSize = orig.Size
	}
	saved := float64(served) * float64(upstreamSize) / float64(size)
	c.metrics.SavedBytes.Add(saved)
	c.stats.addSaved(saved)
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
		v := fl.view()
		out = append(out, Download{NAR: fl.name, Upstream: fl.upstream, Bytes: v.written, Size: v.size, Clients: v.clients})
	}
	slices.SortFunc(out, func(a, b Download) int { return strings.Compare(a.NAR, b.NAR) })
	return out
}

// join returns the flight for name, starting its fill from the upstream
// if none runs, and counts the caller as its client until leave; the fill
// logs under ctx's request id. Once the Cache is closed no fill starts:
// a new flight has already failed with ErrClosed.
func (c *Cache) join(ctx context.Context, name string, src store.NARSource) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	fl, ok := c.flights[name]
	switch {
	case ok:
	case !c.detachLocked():
		fl = newFlight(name, src.Upstream)
		fl.finish(ErrClosed)
	default:
		fl = newFlight(name, src.Upstream)
		c.flights[name] = fl
		c.metrics.Downloads.Inc()
		go c.fill(fl, src, reqid.From(ctx))
	}
	fl.addClient(1)
	c.metrics.DownloadClients.Inc()
	return fl
}

func (c *Cache) leave(fl *flight) {
	fl.addClient(-1)
	c.metrics.DownloadClients.Dec()
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
