package upstream

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hungListener accepts TCP connections and never answers on them, like a
// wedged server or a middlebox that swallows the requests. It returns the
// base URL.
func hungListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestGroupHungFirstUpstream is issue #9's goal: with a first upstream that
// accepts connections and never answers, 20 lookups of absent paths take
// under 5s in all (without the breaker each waits the 800ms Timeout: 16s),
// and lookups the second upstream answers are slowed by at most the hedge
// delay.
func TestGroupHungFirstUpstream(t *testing.T) {
	const present = "present"
	second := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/"+present) {
				_, _ = w.Write([]byte("found"))
				return
			}
			http.NotFound(w, r)
		}
	})
	hung := newClient(t, hungListener(t), Options{Timeout: 800 * time.Millisecond})
	g := NewGroup([]*Client{hung, newClient(t, second.URL, Options{})}, 0)
	t.Cleanup(g.Close)

	start := time.Now()
	for i := range 20 {
		_, err := g.NarInfo(t.Context(), "absent"+string(rune('a'+i)), nil)
		// The hung upstream might have had it: an outage, not a miss.
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup %d: %v, want ErrUnavailable", i, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("20 lookups of absent paths took %v, want under 5s", d)
	}
	if state, _ := hung.Breaker(); state == BreakerClosed {
		t.Errorf("hung upstream's breaker is %v", state)
	}
	_, err := g.NarInfo(t.Context(), "absent-last", nil)
	checkErr(t, err, ErrUnavailable, hung.String()+": skipped: down after 3 failures in a row", "timeout after 800ms")

	for i := range 10 {
		start := time.Now()
		ans, err := g.NarInfo(t.Context(), present+string(rune('a'+i)), nil)
		if err != nil || string(ans.Body) != "found" {
			t.Fatalf("lookup %d: %q, %v", i, ans.Body, err)
		}
		if d := time.Since(start); d > defaultHedge+300*time.Millisecond {
			t.Errorf("lookup %d served by the second upstream took %v, want at most the hedge delay (%v)", i, d, defaultHedge)
		}
	}
}

// TestGroupProbeRecovers: once an upstream's breaker opens, the Group's
// probe of nix-cache-info notices its return, with no lookup paying for it.
func TestGroupProbeRecovers(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var narinfos, probes atomic.Int32
	srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/nix-cache-info" {
				probes.Add(1)
			} else {
				narinfos.Add(1)
			}
			switch {
			case down.Load():
				w.WriteHeader(http.StatusBadGateway)
			case r.URL.Path == "/nix-cache-info":
				_, _ = w.Write([]byte("StoreDir: /nix/store\n"))
			default:
				http.NotFound(w, r)
			}
		}
	})
	c := newClient(t, srv.URL, Options{FailureThreshold: 2, BackoffMin: 100 * time.Millisecond, Attempts: 1})
	g := NewGroup([]*Client{c}, 0)
	t.Cleanup(g.Close)
	for range 2 {
		_, err := g.NarInfo(t.Context(), "abc", nil)
		checkErr(t, err, ErrUnavailable, "502 Bad Gateway")
	}
	_, err := g.NarInfo(t.Context(), "abc", nil)
	checkErr(t, err, ErrUnavailable, "skipped")
	if narinfos.Load() != 2 {
		t.Fatalf("%d narinfo requests, want 2 (the third skipped)", narinfos.Load())
	}
	// Let a failed probe or two double the back-off, then come back.
	time.Sleep(250 * time.Millisecond)
	down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if state, _ := c.Breaker(); state == BreakerClosed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("breaker still not closed 5s after the upstream came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if probes.Load() < 2 || narinfos.Load() != 2 {
		t.Errorf("%d probes and %d narinfo requests, want at least 2 probes and no more narinfo requests", probes.Load(), narinfos.Load())
	}
	_, err = g.NarInfo(t.Context(), "abc", nil)
	checkErr(t, err, ErrNotFound)
}

// TestGroupProbeRefusesNonCache: a 200 that is not nix-cache-info (a
// captive portal's page) keeps the breaker open.
func TestGroupProbeRefusesNonCache(t *testing.T) {
	var probes atomic.Int32
	srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/nix-cache-info" {
				probes.Add(1)
				_, _ = w.Write([]byte("<html>Please log in</html>"))
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	c := newClient(t, srv.URL, Options{FailureThreshold: 1, BackoffMin: 50 * time.Millisecond, Attempts: 1})
	g := NewGroup([]*Client{c}, 0)
	t.Cleanup(g.Close)
	_, err := g.NarInfo(t.Context(), "abc", nil)
	checkErr(t, err, ErrUnavailable)
	deadline := time.Now().Add(5 * time.Second)
	for probes.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if state, _ := c.Breaker(); state == BreakerClosed || probes.Load() < 2 {
		t.Errorf("after %d probes answered by a login page, breaker %v; want it still open", probes.Load(), state)
	}
}

// TestGroupCloseStopsProbes: Close ends a probe stuck on a hung upstream.
func TestGroupCloseStopsProbes(t *testing.T) {
	c := newClient(t, hungListener(t), Options{Timeout: time.Minute, FailureThreshold: 1, BackoffMin: time.Millisecond})
	g := NewGroup([]*Client{c}, 0)
	tk, _ := c.breaker.allow(false)
	c.breaker.report(tk, failed, errors.New("down"))
	// Wait for the probe to take the trial, then hang on the listener.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if state, _ := c.Breaker(); state == BreakerHalfOpen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no probe started")
		}
		time.Sleep(time.Millisecond)
	}
	within(t, time.Second, g.Close)
	if state, _ := c.Breaker(); state != BreakerOpen {
		t.Errorf("after Close the abandoned probe left the breaker %v, want open", state)
	}
}

// TestGroupHungFirstUpstreamDefaultTimeout is the same goal at the default
// 10 s timeout, as a user runs it: the Group gives up on the silent
// upstream a second after asking it once the other has answered, and that
// counts toward its breaker, so 20 absent lookups take ~3 s, not 3 × 10 s.
func TestGroupHungFirstUpstreamDefaultTimeout(t *testing.T) {
	second := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
	})
	obs := &outcomes{}
	hung := newClient(t, hungListener(t), Options{Observer: obs})
	g := NewGroup([]*Client{hung, newClient(t, second.URL, Options{})}, 0)
	t.Cleanup(g.Close)
	start := time.Now()
	for i := range 20 {
		_, err := g.NarInfo(t.Context(), "absent"+string(rune('a'+i)), nil)
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup %d: %v, want ErrUnavailable", i, err)
		}
		if i == 0 && !strings.Contains(err.Error(), ErrStraggler.Error()) {
			t.Errorf("first lookup's error does not say the upstream straggled: %v", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("20 lookups of absent paths took %v at the default timeout, want under 5s", d)
	}
	if state, _ := hung.Breaker(); state == BreakerClosed {
		t.Errorf("hung upstream's breaker is %v", state)
	}
	// The lookups it straggled on show as its errors (the status page's
	// health and the error-ratio alert read them).
	if n := obs.count("narinfo/error"); n < 3 {
		t.Errorf("hung upstream has %d requests counted as errors, want at least 3", n)
	}
}

// TestGroupSlowFirstUpstreamAnswers: an upstream slower than the hedge but
// within the straggle bound still gets to answer, and wins.
func TestGroupSlowFirstUpstreamAnswers(t *testing.T) {
	slow := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(700 * time.Millisecond)
			_, _ = w.Write([]byte("from the slow one"))
		}
	})
	fast := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
	})
	c := newClient(t, slow.URL, Options{})
	g := NewGroupWith([]*Client{c, newClient(t, fast.URL, Options{})}, GroupOptions{Straggle: 3 * time.Second})
	t.Cleanup(g.Close)
	ans, err := g.NarInfo(t.Context(), "somehash", nil)
	if err != nil || string(ans.Body) != "from the slow one" {
		t.Fatalf("got %q, %v; want the slow upstream's answer", ans.Body, err)
	}
	if state, _ := c.Breaker(); state != BreakerClosed {
		t.Errorf("slow upstream's breaker is %v", state)
	}
}
