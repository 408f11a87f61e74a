package relay

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testHash = "0123456789abcdfghijklmnpqrsvwxyz"
	testNAR  = "/nar/1111111111111111111111111111111111111111111111111111.nar.xz"
)

func testFiles() map[string]string {
	return map[string]string{
		"/" + testHash + ".narinfo":       "StorePath: /nix/store/" + testHash + "-hello\nURL: nar/x.nar.xz\n",
		"/" + testHash + ".ls":            `{"version":1}`,
		testNAR:                           strings.Repeat("0123456789", 1000),
		"/log/" + testHash + "-hello.drv": "building\n",
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestForwardsEveryKind(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	_, srv, reg := startRelay(t, fastOptions(cache.URL()))
	nar := testFiles()[testNAR]
	for _, tc := range []struct {
		path   string
		header []string
		status int
		body   string
	}{
		{"/nix-cache-info", nil, 200, testCacheInfo},
		{"/" + testHash + ".narinfo", nil, 200, testFiles()["/"+testHash+".narinfo"]},
		{"/" + testHash + ".ls", nil, 200, `{"version":1}`},
		{"/log/" + testHash + "-hello.drv", nil, 200, "building\n"},
		{testNAR, nil, 200, nar},
		{testNAR, []string{"Range", "bytes=100-109"}, http.StatusPartialContent, nar[100:110]},
		{"/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo", nil, 404, "404 page not found\n"},
	} {
		status, body, err := get(t, srv, tc.path, tc.header...)
		if err != nil || status != tc.status || body != tc.body {
			t.Errorf("GET %s %v: %d %.40q %v, want %d %.40q", tc.path, tc.header, status, body, err, tc.status, tc.body)
		}
	}
	if got := requests(reg, kindNarInfo, answerForwarded); got != 2 {
		t.Errorf("narinfo forwarded = %v, want 2", got)
	}
	if got := requests(reg, kindNAR, answerForwarded); got != 2 {
		t.Errorf("nar forwarded = %v, want 2", got)
	}
}

// TestRefusesOtherRequests: names are checked before anything reaches the
// cache, and the relay never writes.
func TestRefusesOtherRequests(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	_, srv, _ := startRelay(t, fastOptions(cache.URL()))
	waitFor(t, "first probe", func() bool { return cache.requests.Load() > 0 })
	before := cache.requests.Load()
	for _, p := range []string{"/", "/nar/", "/nar/../nix-cache-info", "/nar/a/b", "/x.narinfo", "/log/../../etc/passwd", "/metrics"} {
		if status, _, _ := get(t, srv, p); status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, status)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/"+testHash+".narinfo", strings.NewReader("x"))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", resp.StatusCode)
	}
	// Probes may have run meanwhile; only nix-cache-info is asked for.
	if n := cache.requests.Load() - before; n > 0 {
		t.Logf("%d probes meanwhile", n)
	}
}

// TestNoCacheReachable: narinfo 404 at once, nix-cache-info 200, and the
// answers counted as the relay's own.
func TestNoCacheReachable(t *testing.T) {
	_, srv, reg := startRelay(t, fastOptions(deadAddr(t)))
	start := time.Now()
	status, _, _ := get(t, srv, "/"+testHash+".narinfo")
	if status != http.StatusNotFound {
		t.Errorf("narinfo: %d, want 404", status)
	}
	status, body, _ := get(t, srv, "/nix-cache-info")
	if status != 200 || !strings.Contains(body, "StoreDir: /nix/store\n") || !strings.Contains(body, "Priority: 30\n") {
		t.Errorf("nix-cache-info: %d %q", status, body)
	}
	if status, _, _ := get(t, srv, testNAR); status != http.StatusNotFound {
		t.Errorf("NAR: %d, want 404", status)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("answers took %v", d)
	}
	if got := requests(reg, kindNarInfo, answerSelf); got != 1 {
		t.Errorf("narinfo self = %v, want 1", got)
	}
	if got := requests(reg, kindCacheInfo, answerSelf); got != 1 {
		t.Errorf("nix-cache-info self = %v, want 1", got)
	}
}

// TestFirstReachableInOrder: the first cache listed that answers is used.
func TestFirstReachableInOrder(t *testing.T) {
	first := newFakeCache(t, map[string]string{"/" + testHash + ".narinfo": "first"})
	second := newFakeCache(t, map[string]string{"/" + testHash + ".narinfo": "second"})
	r, srv, _ := startRelay(t, fastOptions(deadAddr(t), first.URL(), second.URL()))
	if _, body, _ := get(t, srv, "/"+testHash+".narinfo"); body != "first" {
		t.Errorf("got %q, want first", body)
	}
	first.stop()
	// The forward fails, the next cache answers the same request.
	if _, body, _ := get(t, srv, "/"+testHash+".narinfo"); body != "second" {
		t.Errorf("after the first stopped: got %q, want second", body)
	}
	if got := r.Reachable(); got != second.URL() {
		t.Errorf("Reachable = %q, want %q", got, second.URL())
	}
	first.start()
	waitFor(t, "the first cache to be used again", func() bool { return r.Reachable() == first.URL() })
}

// TestLeaveAndReturn: a cache that goes away is answered for at once (and
// its nix-cache-info kept); back, it is forwarded to again within the
// back-off.
func TestLeaveAndReturn(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	r, srv, _ := startRelay(t, fastOptions(cache.URL()))
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != 200 {
		t.Fatalf("narinfo: %d", status)
	}
	cache.stop()
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != http.StatusNotFound {
		t.Errorf("narinfo with the cache gone: %d, want 404", status)
	}
	if _, body, _ := get(t, srv, "/nix-cache-info"); body != testCacheInfo {
		t.Errorf("nix-cache-info with the cache gone: %q, want the cache's last", body)
	}
	cache.start()
	d := waitFor(t, "the cache to be used again", func() bool { return r.Reachable() != "" })
	t.Logf("back after %v", d)
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != 200 {
		t.Errorf("narinfo with the cache back: %d", status)
	}
}

// TestNetworkChangeProbesAtOnce: with back-off far longer than the test, a
// change told by the system brings the cache back.
func TestNetworkChangeProbesAtOnce(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	cache.stop()
	changes := make(chan struct{})
	opts := fastOptions(cache.URL())
	opts.BackoffMin, opts.BackoffMax, opts.CheckInterval = time.Hour, time.Hour, time.Hour
	opts.Changes = changes
	r, srv, _ := startRelay(t, opts)
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != http.StatusNotFound {
		t.Fatalf("narinfo: %d, want 404", status)
	}
	cache.start()
	changes <- struct{}{}
	waitFor(t, "the change to bring the cache back", func() bool { return r.Reachable() != "" })
}

// TestCacheDiesMidNAR: the client gets an error, not a short file.
func TestCacheDiesMidNAR(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	_, srv, reg := startRelay(t, fastOptions(cache.URL()))
	cache.breakNAR.Store(true)
	status, body, err := get(t, srv, testNAR)
	if err == nil {
		t.Errorf("GET NAR: %d, %d bytes and no error; want an error", status, len(body))
	}
	if got := requests(reg, kindNAR, answerBroken); got != 1 {
		t.Errorf("nar broken = %v, want 1", got)
	}
}

// TestNarInfo5xxIsNotFound: a cache whose lookup fails (its upstreams
// down) gives Nix a 404, not a 5xx that fails its build.
func TestNarInfo5xxIsNotFound(t *testing.T) {
	cache := newFakeCache(t, nil)
	cache.failNarInfo.Store(true)
	r, srv, _ := startRelay(t, fastOptions(cache.URL()))
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != http.StatusNotFound {
		t.Errorf("narinfo: %d, want 404", status)
	}
	if r.Reachable() == "" {
		t.Error("a cache that answers 502 to a lookup was taken as unreachable")
	}
}

func TestNewRefusesBadCaches(t *testing.T) {
	for _, c := range [][]string{nil, {"ftp://x"}, {"http://"}, {"http://x/?a=b"}, {"://"}} {
		if _, err := New(Options{Caches: c}); err == nil {
			t.Errorf("New(%q): no error", c)
		}
	}
}

// TestHungForwardCutWhenProbeFails: a forward that gets no answer (packets
// dropped on a kept-alive connection) has the cache probed; when the probe
// fails the forward is cut and the relay answers itself, long before the
// header timeout.
func TestHungForwardCutWhenProbeFails(t *testing.T) {
	cache := newFakeCache(t, testFiles())
	opts := fastOptions(cache.URL())
	opts.CheckInterval, opts.BackoffMin, opts.BackoffMax = time.Hour, time.Hour, time.Hour
	_, srv, _ := startRelay(t, opts)
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != 200 {
		t.Fatalf("narinfo: %d", status)
	}
	cache.hangNarInfo.Store(true)
	cache.failProbe.Store(true)
	start := time.Now()
	status, _, _ := get(t, srv, "/"+testHash+".narinfo")
	if status != http.StatusNotFound {
		t.Errorf("narinfo: %d, want 404", status)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("answered after %v, want about ConnectTimeout (%v)", d, opts.ConnectTimeout)
	}
}

// TestDiscoveredCaches: caches sent on Discovered are forwarded to after
// the configured ones, and dropped when no longer sent.
func TestDiscoveredCaches(t *testing.T) {
	configured := newFakeCache(t, map[string]string{"/" + testHash + ".narinfo": "configured"})
	found := newFakeCache(t, map[string]string{"/" + testHash + ".narinfo": "discovered"})
	discovered := make(chan []string)
	opts := fastOptions(configured.URL())
	opts.Discovered = discovered
	r, srv, _ := startRelay(t, opts)
	discovered <- []string{found.URL(), configured.URL(), found.URL()}
	if _, body, _ := get(t, srv, "/"+testHash+".narinfo"); body != "configured" {
		t.Errorf("got %q, want the configured cache first", body)
	}
	configured.stop()
	waitFor(t, "the discovered cache to be used", func() bool { return r.Reachable() == found.URL() })
	if _, body, _ := get(t, srv, "/"+testHash+".narinfo"); body != "discovered" {
		t.Errorf("got %q, want the discovered cache", body)
	}
	discovered <- nil
	waitFor(t, "the discovered cache to be dropped", func() bool { return len(r.list()) == 1 })
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != http.StatusNotFound {
		t.Errorf("narinfo with no cache: %d, want 404", status)
	}
}

// TestDiscoveryOnly: no configured cache, only discovery.
func TestDiscoveryOnly(t *testing.T) {
	found := newFakeCache(t, testFiles())
	discovered := make(chan []string, 1)
	opts := fastOptions()
	opts.Discovered = discovered
	r, srv, _ := startRelay(t, opts)
	if status, _, _ := get(t, srv, "/"+testHash+".narinfo"); status != http.StatusNotFound {
		t.Errorf("narinfo before discovery: %d, want 404", status)
	}
	discovered <- []string{found.URL()}
	waitFor(t, "the discovered cache to be used", func() bool { return r.Reachable() == found.URL() })
}
