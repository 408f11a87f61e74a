package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults for the zero values of Options, and the fixed limits.
const (
	defaultTimeout      = 10 * time.Second
	defaultStallTimeout = 60 * time.Second
	defaultUserAgent    = "nix-cache-proxy"
	defaultAttempts     = 3
	// maxRedirects matches what Nix's curl follows.
	maxRedirects = 10
)

// Options configures a Client. Zero values mean defaults.
type Options struct {
	// Timeout bounds a whole narinfo, .ls or log request, and the wait for
	// the response headers of a NAR request. Default 10s.
	Timeout time.Duration
	// StallTimeout fails a NAR body Read that receives no byte for this long
	// with ErrUnavailable. Default 60s.
	StallTimeout time.Duration
	// Netrc holds credentials; the entry for the upstream's host name is
	// sent as HTTP Basic. May be nil.
	Netrc *Netrc
	// Transport carries the requests. Nil means a tuned clone of
	// http.DefaultTransport. A custom *http.Transport must set
	// DisableCompression: otherwise Go asks for gzip and transparently
	// decompresses, and NAR bodies would no longer be the stored bytes.
	Transport http.RoundTripper
	// UserAgent is sent on every request. Default "nix-cache-proxy".
	UserAgent string
	// Observer is told about every request, NAR byte and breaker change;
	// may be nil.
	Observer Observer

	// FailureThreshold is how many requests in a row must fail (connection
	// error, timeout, 5xx, 429 or another useless answer; a 404 is an
	// answer) before the upstream's breaker opens: then its requests fail
	// at once with ErrUnavailable, so a dead or hung upstream costs a
	// lookup nothing instead of a Timeout. Default 3.
	FailureThreshold int
	// BackoffMin is how long an open breaker skips the upstream before one
	// trial request (a client's, or the Group's probe of nix-cache-info)
	// may go. Default 1s.
	BackoffMin time.Duration
	// BackoffMax caps the back-off, which doubles after each failed trial.
	// Default 30s; a value below BackoffMin means BackoffMin.
	BackoffMax time.Duration
	// Attempts is how many times one request is sent when it fails in a
	// way a second try may fix: connection reset, 500, 502, 503, 504 or
	// 429 (after its Retry-After, if that is at most 5s). Retries wait
	// 100ms, 200ms, … and never outlast Timeout or the caller's context;
	// timeouts are not retried. Default 3; 1 means no retry.
	Attempts int
}

// Observer watches upstream traffic (for metrics). kind is "narinfo",
// "nar" or "other"; outcome is "ok", "not_found" or "error".
type Observer interface {
	UpstreamRequest(upstream, kind, outcome string, d time.Duration)
	UpstreamFetched(upstream string, n int64)
	// UpstreamBreaker is told the upstream's breaker state at New and at
	// each change: state is a BreakerState (0 closed, 1 open, 2
	// half-open), tripped is true when it opens after being closed. It is
	// called with the breaker locked and must not block.
	UpstreamBreaker(upstream string, state int, tripped bool)
}

type nopObserver struct{}

func (nopObserver) UpstreamRequest(string, string, string, time.Duration) {}
func (nopObserver) UpstreamFetched(string, int64)                         {}
func (nopObserver) UpstreamBreaker(string, int, bool)                     {}

// observe reports a finished request; a caller's own cancellation is not
// the upstream's doing and is not counted.
func (c *Client) observe(parent context.Context, kind string, start time.Time, err error) {
	c.observeAfter(parent, kind, time.Since(start), err)
}

// observeAfter is observe with the duration measured by the caller.
func (c *Client) observeAfter(parent context.Context, kind string, d time.Duration, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		outcome = "not_found"
	case errors.Is(context.Cause(parent), ErrStraggler):
		// Given up on while every other upstream had answered: its
		// silence is the upstream's doing, and shows as an error.
		outcome = "error"
	case parent.Err() != nil:
		return
	default:
		outcome = "error"
	}
	c.obs.UpstreamRequest(c.name, kind, outcome, d)
}

// Client talks to one upstream cache. It is safe for concurrent use.
type Client struct {
	base     *url.URL // normalised: Path has no trailing slash
	name     string   // base.String(), the upstream's identity
	hc       *http.Client
	timeout  time.Duration
	stall    time.Duration
	agent    string
	login    string
	password string
	hasAuth  bool
	obs      Observer
	attempts int
	breaker  *breaker
}

// New returns a Client for the cache at base, an absolute http or https URL
// without query, fragment or user info (credentials belong in Options.Netrc,
// not in a URL that is stored as the upstream's identity). A trailing slash
// is optional.
func New(base string, opts Options) (*Client, error) {
	u, err := parseBase(base)
	if err != nil {
		return nil, err
	}
	c := &Client{
		base:    u,
		name:    u.String(),
		timeout: orDefault(opts.Timeout, defaultTimeout),
		stall:   orDefault(opts.StallTimeout, defaultStallTimeout),
		agent:   opts.UserAgent,
		obs:     opts.Observer,
	}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.agent == "" {
		c.agent = defaultUserAgent
	}
	c.attempts = opts.Attempts
	if c.attempts <= 0 {
		c.attempts = defaultAttempts
	}
	c.breaker = newBreaker(opts.FailureThreshold, opts.BackoffMin, opts.BackoffMax, func(s BreakerState, tripped bool) {
		c.obs.UpstreamBreaker(c.name, int(s), tripped)
	})
	c.obs.UpstreamBreaker(c.name, int(BreakerClosed), false)
	if opts.Netrc != nil {
		// Nix (through curl) matches netrc by host name only, never port.
		c.login, c.password, c.hasAuth = opts.Netrc.Credentials(u.Hostname())
	}
	rt := opts.Transport
	if rt == nil {
		rt = newTransport()
	}
	c.hc = &http.Client{Transport: rt, CheckRedirect: c.checkRedirect}
	return c, nil
}

// String returns the base URL without trailing slash: the upstream's
// identity as stored in the index.
func (c *Client) String() string { return c.name }

func parseBase(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("upstream: base URL %q: %w", base, err)
	}
	var problem string
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		problem = "scheme must be http or https"
	case u.Opaque != "" || u.Host == "":
		problem = "must be absolute, with a host"
	case u.User != nil:
		problem = "must not carry user info (use a netrc file)"
	case u.RawQuery != "" || u.ForceQuery:
		problem = "must not have a query"
	case strings.Contains(base, "#"):
		problem = "must not have a fragment"
	}
	if problem != "" {
		return nil, fmt.Errorf("upstream: base URL %q: %s", base, problem)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// newTransport clones the default transport so connection pooling and
// HTTP/2 stay as Go tunes them, keeps more idle connections per host (a
// client's closure fetch asks one upstream many times in parallel) and
// disables compression so bodies arrive exactly as stored.
func newTransport() *http.Transport {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConns = 100
	t.MaxIdleConnsPerHost = 16
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	return t
}

// Breaker returns the state of the upstream's breaker and, when it is
// open, when the back-off ends.
func (c *Client) Breaker() (BreakerState, time.Time) { return c.breaker.State() }

// newRequest builds a GET for u with our User-Agent and, when u is on the
// upstream's own origin, its credentials.
func (c *Client) newRequest(ctx context.Context, u *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.name, err)
	}
	req.Header.Set("User-Agent", c.agent)
	c.authorize(req)
	return req, nil
}
