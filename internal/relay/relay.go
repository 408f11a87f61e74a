// Package relay is the roaming client's side of the LAN cache: a small
// HTTP server on a laptop's loopback that Nix lists as a substituter. While
// a LAN cache answers, every request is forwarded to it, streamed and never
// stored or signed; while none does, the relay answers at once itself, so
// Nix moves on to its next substituter instead of waiting for connect
// timeouts and retrying a cache that is out of reach.
//
// What the relay answers itself:
//   - narinfo, NAR, .ls, log: 404 ("not here": Nix asks its next
//     substituter; see PROTOCOL.md's status codes).
//   - nix-cache-info: 200 with the last one a LAN cache sent, or a default
//     (StoreDir /nix/store, WantMassQuery 1, Priority 30), so Nix never
//     disables the substituter for the rest of its run.
//
// Caches are probed in the background (see probe.go): the one in use every
// few seconds, the unreachable ones with back-off, and all at once whenever
// Options.Changes says the network changed.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Relay. Zero values mean the defaults in each comment.
type Options struct {
	// Caches are the LAN caches' base URLs, most preferred first. The relay
	// forwards to the first one reachable.
	Caches []string
	// Discovered, if not nil, sends the URLs of the caches found on the
	// network (package discovery), each time the whole set; they are
	// tried after Caches, in the order sent. It adds no trust: Nix checks
	// every signature against its own keys.
	Discovered <-chan []string
	// Priority is the Priority of the nix-cache-info the relay answers
	// itself before any cache was reached (default 30, a LAN cache's,
	// ahead of cache.nixos.org's 40).
	Priority int
	// ConnectTimeout bounds connecting to a cache (default 1s): on a LAN a
	// connection takes milliseconds, and off it a dropped SYN must not hold
	// Nix for long.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds waiting for a cache's response headers once
	// connected (default 30s: a LAN cache may ask its upstreams first).
	HeaderTimeout time.Duration
	// CheckInterval is how often the cache in use is probed (default 5s),
	// to notice a network that drops packets without telling.
	CheckInterval time.Duration
	// BackoffMin and BackoffMax bound the wait between probes of an
	// unreachable cache (defaults 250ms and 3s), so a cache back on the
	// network is used again within seconds even when no change is told.
	BackoffMin, BackoffMax time.Duration
	// Changes, if not nil, tells of network changes (addresses, routes,
	// links: see package netwatch); each one probes every cache at once.
	Changes <-chan struct{}
	// Metrics, if not nil, gets the relay's metrics.
	Metrics prometheus.Registerer
	// Logger gets one line per change of a cache's reachability and per
	// broken forward (default: discard).
	Logger *slog.Logger
	// Transport, if not nil, replaces the forwarding transport (tests).
	Transport http.RoundTripper
}

// Relay forwards Nix's requests to the first reachable LAN cache. It is an
// http.Handler; Run probes the caches until its context ends.
type Relay struct {
	opts Options
	// caches are the configured caches, then the discovered ones: the
	// order forwards try them in. Run replaces it as discovery tells.
	caches     atomic.Pointer[[]*lanCache]
	configured []*lanCache
	fwd        *http.Client
	probe      *http.Client
	log        *slog.Logger
	info       atomic.Pointer[[]byte]
	metrics    relayMetrics
	tally      tally
	closeOnce  sync.Once
}

// lanCache is one configured cache and what the relay last learnt of it.
type lanCache struct {
	name string // the URL as configured: logs and metric labels
	base *url.URL
	up   atomic.Bool
	// probed is closed after the first probe: requests wait for it, so a
	// relay just started does not answer 404 for a cache it has not tried.
	probed     chan struct{}
	probedOnce sync.Once
	wake       chan struct{} // probe now (cap 1)
	fresh      atomic.Bool   // and restart the back-off

	mu sync.Mutex
	// gone ends when the cache is taken as unreachable: forwards to it
	// still waiting for an answer, or streaming one, are cut then instead
	// of waiting for a connection whose packets are dropped.
	gone    context.Context
	setGone context.CancelFunc
}

// goneContext returns the context that ends when c is next taken as
// unreachable.
func (c *lanCache) goneContext() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone == nil {
		c.gone, c.setGone = context.WithCancel(context.Background())
	}
	return c.gone
}

// setUp records c's reachability and reports whether it changed.
func (c *lanCache) setUp(up bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up.Swap(up) == up {
		return false
	}
	if !up && c.setGone != nil {
		c.setGone()
		c.gone, c.setGone = nil, nil
	}
	return true
}

// New returns a Relay for opts. Requests wait for each cache's first probe
// (at most a few ConnectTimeouts), so Run must run.
func New(opts Options) (*Relay, error) {
	if len(opts.Caches) == 0 && opts.Discovered == nil {
		return nil, errors.New("relay: no LAN cache given")
	}
	setDefault(&opts.ConnectTimeout, time.Second)
	setDefault(&opts.HeaderTimeout, 30*time.Second)
	setDefault(&opts.CheckInterval, 5*time.Second)
	setDefault(&opts.BackoffMin, 250*time.Millisecond)
	setDefault(&opts.BackoffMax, 3*time.Second)
	if opts.Priority == 0 {
		opts.Priority = 30
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{opts: opts, log: opts.Logger}
	for _, s := range opts.Caches {
		u, err := parseCacheURL(s)
		if err != nil {
			return nil, err
		}
		r.configured = append(r.configured, newLANCache(s, u))
	}
	r.caches.Store(&r.configured)
	info := []byte("StoreDir: " + narinfo.StoreDir + "\nWantMassQuery: 1\nPriority: " + strconv.Itoa(opts.Priority) + "\n")
	r.info.Store(&info)
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 15 * time.Second}
	tr := opts.Transport
	if tr == nil {
		tr = &http.Transport{
			DialContext:           dialer.DialContext,
			ResponseHeaderTimeout: opts.HeaderTimeout,
			// Bodies pass through as the cache sent them: Nix decodes
			// Content-Encoding itself and resumes only without it.
			DisableCompression: true,
			// Nix opens up to http-connections (25) at once.
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     time.Minute,
		}
	}
	r.fwd = &http.Client{
		Transport: tr,
		// A redirect goes back to Nix, which follows it itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// Probes take a fresh connection each: a kept-alive one to a cache
	// that left the network would not notice for minutes.
	r.probe = &http.Client{
		Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, ResponseHeaderTimeout: probeAnswerTimeout},
		Timeout:   opts.ConnectTimeout + probeAnswerTimeout,
	}
	if opts.Transport != nil {
		r.probe.Transport = opts.Transport
	}
	r.metrics = newRelayMetrics(opts.Metrics, r.configured)
	return r, nil
}

// probeAnswerTimeout bounds a probe's wait for nix-cache-info once
// connected. Generous: a busy cache must not be taken as gone (that cuts
// the downloads in flight); a network dropping packets fails the connect.
const probeAnswerTimeout = 5 * time.Second

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// parseCacheURL checks a LAN cache's base URL: http or https, a host, no
// query, and no trailing slash (paths are appended).
func parseCacheURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("relay: cache %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("relay: cache %q: want http(s)://host[:port][/path]", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func newLANCache(name string, base *url.URL) *lanCache {
	return &lanCache{name: name, base: base, wake: make(chan struct{}, 1), probed: make(chan struct{})}
}

// list returns the caches in the order forwards try them.
func (r *Relay) list() []*lanCache { return *r.caches.Load() }

// current returns the first cache the relay takes as reachable, or nil.
func (r *Relay) current() *lanCache {
	for _, c := range r.list() {
		if c.up.Load() {
			return c
		}
	}
	return nil
}

// Reachable returns the URL of the cache the relay forwards to now, or ""
// when it answers itself.
func (r *Relay) Reachable() string {
	if c := r.current(); c != nil {
		return c.name
	}
	return ""
}

// Close drops the relay's idle connections to the caches.
func (r *Relay) Close() {
	r.closeOnce.Do(func() {
		r.fwd.CloseIdleConnections()
		r.probe.CloseIdleConnections()
	})
}
