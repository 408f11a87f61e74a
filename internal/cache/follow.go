package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// errAllSent ends serveFlight's watch once a verified NAR is all sent.
var errAllSent = errors.New("cache: the whole verified NAR is sent")

// serveFlight streams fl's NAR to w from disk: what has landed in the part
// file so far, then each new chunk as it lands, until the fill ends. It
// never asks the upstream itself, except for a NAR the fill does not keep,
// which it relays from the upstream (relayFromUpstream) if it has sent
// nothing yet, or carries on from there (carryOn) if it has. A NAR that was kept and is gone already is errGone, before
// anything is written.
func (c *Cache) serveFlight(w http.ResponseWriter, r *http.Request, fl *flight, src store.NARSource) error {
	ctx := r.Context()
	var (
		f       store.NARFile // the part file, once opened
		sent    int64
		started bool
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	// The status goes out with the first bytes, not before: a fill that
	// fails before any is sent (the disk fills up) leaves this client free
	// to get the NAR straight from the upstream.
	start := func(size int64) {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", narContentType)
		if size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
	}
	// Counted as it goes, so a long download shows on dashboards while it
	// streams rather than all at once at its end.
	served := c.metrics.ServedBytes.WithLabelValues("upstream")
	last, err := fl.watch(ctx, func(v flightView) error {
		if v.state == fetching || v.state == notKept || v.state == failed {
			return nil
		}
		if f == nil {
			if v.state == stored {
				return nil // never opened the part: served from the store below
			}
			pf, err := v.part.OpenPartial()
			if errors.Is(err, fs.ErrNotExist) {
				return nil // committed or discarded just now: the next view says which
			}
			if err != nil {
				return fmt.Errorf("open NAR %s: %w", fl.name, err)
			}
			f = pf
		}
		limit := v.written
		if v.size > 0 && v.state == streaming {
			// Hold back the last byte until the fill has checked it out:
			// with all Content-Length bytes sent, aborting the connection
			// no longer tells the client the body is wrong.
			limit = min(limit, v.size-1)
		}
		if sent < limit {
			start(v.size)
			// io.CopyN over an *os.File lets net/http use sendfile.
			n, err := io.CopyN(w, f, limit-sent)
			sent += n
			served.Add(float64(n))
			c.stats.servedUpstream.Add(n)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrAborted, err)
			}
		}
		if started && !v.state.ended() {
			if fw, ok := w.(http.Flusher); ok {
				fw.Flush()
			}
		}
		if v.state == verified && started && sent == v.written {
			// All of it, checked: done, without waiting for the commit
			// (the connection's next request waits for this handler).
			return errAllSent
		}
		return nil
	})
	if errors.Is(err, errAllSent) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case last.state == stored && f != nil:
		start(last.size)
		return nil
	case last.state == stored:
		// Found in the store by the fill, or committed before this client
		// opened the part file.
		sf, err := c.store.OpenNAR(ctx, fl.name)
		if errors.Is(err, store.ErrNotFound) {
			return errGone
		}
		if err != nil {
			return err
		}
		defer sf.Close()
		return c.serveStored(w, r, fl.name, sf)
	case started && last.state == notKept:
		// Writing to the disk failed midway: the rest from the upstream.
		return c.carryOn(w, r, fl.name, src, f, sent, last.size)
	case started:
		return fmt.Errorf("%w: %w", ErrAborted, last.err)
	case last.state == notKept:
		return c.relayFromUpstream(w, r, fl.name, src)
	default:
		return last.err // nothing written yet: the caller can still pick a status
	}
}
