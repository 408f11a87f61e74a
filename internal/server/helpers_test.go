package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/misslog"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// config is what a test proxy differs in; zero values mean test defaults.
type config struct {
	ups  []*fakeupstream.Upstream
	keys []narinfo.PublicKey // nil: trust every upstream's key
	dir  string              // cache dir; default a fresh t.TempDir()
	// timeout is each upstream client's Timeout (default 300ms); the
	// StallTimeout is stall, default 500ms.
	timeout     time.Duration
	stall       time.Duration
	hedge       time.Duration
	negativeTTL time.Duration // default 1m; negative disables
	errStatus   int
	priority    int
	// afterRequest, if set, runs when the proxy's handler for a request
	// has returned (or panicked), so a test can wait for it.
	afterRequest func(*http.Request)
	// reg, if set, gets the proxy's metrics (wired as serve wires them,
	// with the store gauges) and GET /metrics serves it.
	reg *prometheus.Registry
	// minFree is the free disk /readyz asks for.
	minFree int64
	// log, if set, is the cache's and server's logger.
	log *slog.Logger
	// writeToken, if set, turns uploads on; secretKey is the proxy's
	// signing key, maxNARUpload the upload size bound (default 64 GiB).
	writeToken   string
	secretKey    *narinfo.SecretKey
	maxNARUpload int64
	// misses, if set, gives the cache a miss log (flushed by the test:
	// proxy.missRows) as serve wires it.
	misses bool
	// skipVerify is --verify-signatures=false.
	skipVerify bool
	// backoff, if set, is each upstream breaker's back-off (min and max).
	backoff time.Duration
}

// proxy is the real server.New handler over a real store and cache, on
// httptest, asking fake upstreams.
type proxy struct {
	t       testing.TB
	dir     string
	store   *store.Store
	cache   *cache.Cache
	metrics *metrics.Metrics // nil unless config.reg was set
	misses  *misslog.Log     // nil unless config.misses was set
	srv     *httptest.Server
	client  *http.Client
	stopped bool
}

// settle waits until no NAR download is in flight: a client has its last
// byte before the fill commits the NAR, so a test that expects the next
// request to be a hit waits for the commit.
func (p *proxy) settle() {
	p.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(p.cache.Downloads()) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("downloads still in flight after 10 s: %v", p.cache.Downloads())
		}
	}
}

func newProxy(t testing.TB, cfg config) *proxy {
	t.Helper()
	if cfg.dir == "" {
		cfg.dir = t.TempDir()
	}
	if cfg.timeout == 0 {
		cfg.timeout = 300 * time.Millisecond
	}
	if cfg.stall == 0 {
		cfg.stall = 500 * time.Millisecond
	}
	opts := upstream.Options{Timeout: cfg.timeout, StallTimeout: cfg.stall, BackoffMin: cfg.backoff, BackoffMax: cfg.backoff}
	var m *metrics.Metrics
	if cfg.reg != nil {
		m = metrics.New(cfg.reg)
		opts.Observer = m
	}
	var clients []*upstream.Client
	keys := cfg.keys
	for _, u := range cfg.ups {
		c, err := upstream.New(u.URL(), opts)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if cfg.keys == nil {
			keys = append(keys, u.PublicKey())
		}
	}
	st, err := store.Open(cfg.dir)
	if err != nil {
		t.Fatal(err)
	}
	group := upstream.NewGroupWith(clients, upstream.GroupOptions{Hedge: cfg.hedge, Logger: cfg.log})
	t.Cleanup(group.Close)
	var misses *misslog.Log
	var recorder cache.MissRecorder
	if cfg.misses {
		misses = misslog.New(st, misslog.Options{FlushInterval: time.Hour})
		recorder = misses
	}
	c, err := cache.New(cache.Options{
		Store:       st,
		Upstreams:   group,
		Keys:        keys,
		SkipVerify:  cfg.skipVerify,
		NegativeTTL: cfg.negativeTTL,
		Metrics:     m,
		Logger:      cfg.log,
		SecretKey:   cfg.secretKey,
		Misses:      recorder,
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	var uploads *server.UploadConfig
	if cfg.writeToken != "" {
		rcv, err := upload.New(upload.Options{Store: st, Paths: c, Keys: keys, SecretKey: cfg.secretKey, Logger: cfg.log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rcv.Close)
		uploads = &server.UploadConfig{Uploads: rcv, Token: cfg.writeToken, MaxNARSize: cfg.maxNARUpload, StallTimeout: 2 * time.Second}
	}
	scfg := server.Config{Upload: uploads, Cache: c, UpstreamErrorStatus: cfg.errStatus, Priority: cfg.priority, Metrics: m, Logger: cfg.log,
		Ready: func(ctx context.Context) error { return st.Ready(ctx, cfg.minFree) }, Degraded: group.Down}
	if cfg.reg != nil {
		metrics.RegisterStore(cfg.reg, st)
		scfg.MetricsHandler = promhttp.HandlerFor(cfg.reg, promhttp.HandlerOpts{})
	}
	h, err := server.New(scfg)
	if err != nil {
		c.Close()
		st.Close()
		t.Fatal(err)
	}
	var handler http.Handler = h
	if cfg.afterRequest != nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer cfg.afterRequest(r)
			h.ServeHTTP(w, r)
		})
	}
	p := &proxy{t: t, dir: cfg.dir, store: st, cache: c, metrics: m, misses: misses, srv: httptest.NewServer(handler)}
	p.client = p.srv.Client()
	t.Cleanup(p.stop)
	return p
}

// stop shuts the proxy down in the order serve does: HTTP server, cache
// (waits for downloads), store. It is idempotent.
func (p *proxy) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	p.srv.Close()
	p.cache.Close()
	if p.misses != nil {
		if err := p.misses.Close(); err != nil {
			p.t.Errorf("close miss log: %v", err)
		}
	}
	if err := p.store.Close(); err != nil {
		p.t.Errorf("close store: %v", err)
	}
}

// response is what a client got: the status, headers, the body it could
// read and the error that stopped the read (nil for a clean body).
type response struct {
	status  int
	header  http.Header
	body    []byte
	readErr error
}

// do sends method path with header pairs ("Range", "bytes=0-9", …).
func (p *proxy) do(method, path string, header ...string) response {
	p.t.Helper()
	return p.send(method, path, nil, header...)
}

// send is do with a request body.
func (p *proxy) send(method, path string, body []byte, header ...string) response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.srv.URL+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body, readErr: rerr}
}

func (p *proxy) get(path string, header ...string) response {
	p.t.Helper()
	return p.do(http.MethodGet, path, header...)
}

// narURL fetches hash's narinfo through the proxy and returns the NAR URL
// path it names, "/nar/<name>".
func (p *proxy) narURL(hash string) string {
	p.t.Helper()
	r := p.get("/" + hash + ".narinfo")
	if r.status != http.StatusOK {
		p.t.Fatalf("GET %s.narinfo: %d %s", hash, r.status, r.body)
	}
	ni, err := narinfo.Parse(r.body)
	if err != nil {
		p.t.Fatalf("served narinfo does not parse: %v\n%s", err, r.body)
	}
	return "/" + ni.URL
}

// tempFiles lists what is left in the store's temp dir.
func (p *proxy) tempFiles() []string {
	p.t.Helper()
	entries, err := os.ReadDir(filepath.Join(p.dir, "tmp"))
	if err != nil {
		p.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// eventually polls cond every 20ms until it holds or 10s pass. It is for
// effects on the far side of a TTL, not for synchronisation.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// within fails t if f takes longer than max (a generous bound).
func within(t *testing.T, max time.Duration, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if d := time.Since(start); d > max {
		t.Errorf("took %v, want at most %v", d, max)
	}
}

// waitFor receives from ch or fails after 10s.
func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
