package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeCache is a LAN cache on a fixed loopback address that a test takes
// off the network (stop) and brings back (start) on the same address.
type fakeCache struct {
	t    *testing.T
	addr string
	// files maps a request path to its body; anything else is 404.
	files map[string]string
	// breakNAR, when set, makes NAR answers stop after half their body.
	breakNAR atomic.Bool
	// failNarInfo, when set, answers narinfo lookups 502.
	failNarInfo atomic.Bool
	// hangNarInfo, when set, never answers narinfo lookups, as a cache
	// whose packets are dropped on a kept-alive connection.
	hangNarInfo atomic.Bool
	// failProbe, when set, answers nix-cache-info 500.
	failProbe atomic.Bool
	requests  atomic.Int64

	mu  sync.Mutex
	srv *httptest.Server
}

const testCacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 35\n"

func newFakeCache(t *testing.T, files map[string]string) *fakeCache {
	t.Helper()
	all := map[string]string{"/nix-cache-info": testCacheInfo}
	for k, v := range files {
		all[k] = v
	}
	c := &fakeCache{t: t, files: all}
	c.start()
	c.addr = c.srv.Listener.Addr().String()
	t.Cleanup(c.stop)
	return c
}

func (c *fakeCache) URL() string { return "http://" + c.addr }

func (c *fakeCache) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv != nil {
		return
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(c.serve))
	if c.addr != "" {
		ln, err := net.Listen("tcp", c.addr)
		if err != nil {
			c.t.Fatalf("listen again on %s: %v", c.addr, err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	c.srv = srv
}

// stop closes the listener and every connection: the cache is gone.
func (c *fakeCache) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv != nil {
		c.srv.CloseClientConnections()
		c.srv.Close()
		c.srv = nil
	}
}

func (c *fakeCache) serve(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	if r.URL.Path == "/nix-cache-info" && c.failProbe.Load() {
		http.Error(w, "gone", http.StatusInternalServerError)
		return
	}
	if strings.HasSuffix(r.URL.Path, ".narinfo") && c.hangNarInfo.Load() {
		<-r.Context().Done()
		return
	}
	if strings.HasSuffix(r.URL.Path, ".narinfo") && c.failNarInfo.Load() {
		http.Error(w, "upstreams down", http.StatusBadGateway)
		return
	}
	body, ok := c.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/nar/") && c.breakNAR.Load() {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write([]byte(body[:len(body)/2]))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
}

// fastOptions are Options with the probe times cut for tests.
func fastOptions(caches ...string) Options {
	return Options{
		Caches:         caches,
		ConnectTimeout: 500 * time.Millisecond,
		CheckInterval:  50 * time.Millisecond,
		BackoffMin:     10 * time.Millisecond,
		BackoffMax:     40 * time.Millisecond,
	}
}

// startRelay runs a Relay for opts on a loopback server until t ends, with
// its metrics on a registry of its own.
func startRelay(t *testing.T, opts Options) (*Relay, *httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Metrics = reg
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		r.Close()
	})
	return r, srv, reg
}

// get fetches path from srv with the given headers, returning status and
// body, or the error reading it.
func get(t *testing.T, srv *httptest.Server, path string, header ...string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = io.Copy(&b, resp.Body)
	return resp.StatusCode, b.String(), err
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func requests(reg *prometheus.Registry, kind, answer string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "nix_cache_proxy_relay_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["answer"] == answer {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
