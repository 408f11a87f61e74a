package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/prometheus/client_golang/prometheus"
)

// Request kinds: the label values of the relay's metrics.
const (
	kindCacheInfo = "nix-cache-info"
	kindNarInfo   = "narinfo"
	kindNAR       = "nar"
	kindListing   = "ls"
	kindLog       = "log"
)

// kindOf returns the kind of a request path the relay forwards, or "" for
// any other path. Names are checked before they reach a cache.
func kindOf(path string) string {
	switch {
	case path == "/nix-cache-info":
		return kindCacheInfo
	case strings.HasSuffix(path, ".narinfo") && narinfo.ValidHash(strings.TrimSuffix(path[1:], ".narinfo")):
		return kindNarInfo
	case strings.HasSuffix(path, ".ls") && narinfo.ValidHash(strings.TrimSuffix(path[1:], ".ls")):
		return kindListing
	case strings.HasPrefix(path, "/nar/") && validSegment(path[len("/nar/"):]):
		// Any file name, not only ours: other caches (harmonia, attic)
		// name NARs their own way.
		return kindNAR
	case strings.HasPrefix(path, "/log/") && narinfo.ValidStorePathName(path[len("/log/"):]):
		return kindLog
	}
	return ""
}

// validSegment reports whether s is one path segment that names a file.
func validSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\")
}

// ServeHTTP forwards a binary-cache request to the first reachable cache,
// or answers it itself when none is.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the relay only reads", http.StatusMethodNotAllowed)
		return
	}
	kind := kindOf(req.URL.Path)
	if kind == "" {
		http.NotFound(w, req)
		return
	}
	for _, c := range r.list() {
		select {
		case <-c.probed:
		case <-req.Context().Done():
			return
		}
		if !c.up.Load() {
			continue
		}
		switch err := r.forward(w, req, c, kind); {
		case err == nil:
			r.metrics.requests.WithLabelValues(kind, answerForwarded).Inc()
			r.tally.forwarded.Add(1)
			r.log.Debug("relay: forwarded", "path", req.URL.Path, "cache", c.name)
			return
		case errors.Is(err, errBroken):
			// The client got a part of the answer: an error is all that
			// is left to give it.
			r.metrics.requests.WithLabelValues(kind, answerBroken).Inc()
			r.log.Warn("relay: cache broke off a response", "cache", c.name, "path", req.URL.Path, "err", err)
			panic(http.ErrAbortHandler)
		case req.Context().Err() != nil:
			return // the client left
		case errors.Is(err, errLookupFailed):
			// The cache is there but could not look the path up (its
			// upstreams are down): Nix treats a 5xx narinfo as a failure,
			// a 404 as "ask elsewhere".
			r.metrics.requests.WithLabelValues(kind, answerSelf).Inc()
			r.tally.self.Add(1)
			r.answerSelf(w, req, kind)
			return
		default:
			// Nothing was sent: take the cache as gone and try the next.
			r.markDown(c, err)
		}
	}
	r.metrics.requests.WithLabelValues(kind, answerSelf).Inc()
	r.tally.self.Add(1)
	r.log.Debug("relay: answered itself, no LAN cache reachable", "path", req.URL.Path)
	r.answerSelf(w, req, kind)
}

// answerSelf is the answer while no cache is reachable: 404 for a file
// (Nix asks its next substituter), nix-cache-info for nix-cache-info.
func (r *Relay) answerSelf(w http.ResponseWriter, req *http.Request, kind string) {
	if kind != kindCacheInfo {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "no LAN cache reachable", http.StatusNotFound)
		return
	}
	body := *r.info.Load()
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if req.Method != http.MethodHead {
		w.Write(body)
	}
}

var (
	// errBroken marks a forward that failed after the response began.
	errBroken = errors.New("response broken off")
	// errLookupFailed marks a cache's 5xx answer to a narinfo lookup.
	errLookupFailed = errors.New("lookup failed")
)

// forwardHeaders are the request headers passed on to the cache: what
// Nix sends that changes the answer.
var forwardHeaders = []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "Accept", "Accept-Encoding", "User-Agent"}

// hopHeaders belong to one connection and are never passed on.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
}

// forward passes req to c and streams c's answer back. An error before
// anything was written means the client can still be answered otherwise;
// errBroken means the response was cut.
func (r *Relay) forward(w http.ResponseWriter, req *http.Request, c *lanCache, kind string) error {
	u := *c.base
	u.Path += req.URL.Path
	u.RawQuery = req.URL.RawQuery
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	defer context.AfterFunc(c.goneContext(), cancel)()
	// An answer slower than a LAN cache's (a quarter of ConnectTimeout,
	// 250 ms by default: a hit takes a millisecond, a miss asks upstream)
	// may be a network that drops packets: have the cache probed on a fresh connection, which
	// cuts this forward (above) if the cache is gone.
	slow := time.AfterFunc(r.opts.ConnectTimeout/4, func() { c.wakeNow(false) })
	defer slow.Stop()
	out, err := http.NewRequestWithContext(ctx, req.Method, u.String(), nil)
	if err != nil {
		return err
	}
	for _, h := range forwardHeaders {
		if v := req.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	resp, err := r.fwd.Do(out)
	slow.Stop()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 && kind == kindNarInfo {
		return fmt.Errorf("%w: %s", errLookupFailed, resp.Status)
	}
	h := w.Header()
	for k, v := range resp.Header {
		if !hopHeaders[k] {
			h[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	body := &readErr{r: resp.Body}
	io.Copy(countingWriter{w, r.metrics.bytes}, body)
	// A failed write is the client's leaving: nothing to tell it.
	if body.err != nil && req.Context().Err() == nil {
		return fmt.Errorf("%w: %w", errBroken, body.err)
	}
	return nil
}

// readErr remembers its reader's error, to tell a cache that broke off
// from a client that stopped reading.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// countingWriter counts the bytes written as they go: a 2 GB NAR shows in
// the forwarded bytes while it streams, not once it is done.
type countingWriter struct {
	w io.Writer
	n prometheus.Counter
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(float64(n))
	return n, err
}
