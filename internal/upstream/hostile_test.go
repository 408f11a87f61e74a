package upstream

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// outcomes is an Observer that counts requests by kind and outcome.
type outcomes struct {
	mu   sync.Mutex
	seen map[string]int
}

func (o *outcomes) UpstreamRequest(_, kind, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]int{}
	}
	o.seen[kind+"/"+outcome]++
}
func (o *outcomes) UpstreamFetched(string, int64)     {}
func (o *outcomes) UpstreamBreaker(string, int, bool) {}

func (o *outcomes) count(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[key]
}

// endless writes chunk forever, every delay, until the client goes.
func endless(chunk string, delay time.Duration) func(<-chan struct{}) http.HandlerFunc {
	return func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
			for {
				if _, err := w.Write([]byte(chunk)); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-done:
					return
				case <-time.After(delay):
				}
			}
		}
	}
}

// TestHostileNarInfo: answers no real cache gives are errors (outages),
// never misses, with a reason that says what was wrong, and cost at most
// the size cap and the timeout.
func TestHostileNarInfo(t *testing.T) {
	const html = "<!DOCTYPE html>\n<html><body>Please log in to the Wi-Fi</body></html>\n"
	tests := []struct {
		name    string
		h       func(<-chan struct{}) http.HandlerFunc
		mention string
		maxTime time.Duration
		hits    int32 // 0: don't check
	}{
		{name: "larger than any real narinfo",
			h: static(200, "StorePath: /nix/store/x\nReferences:"+strings.Repeat(" x", narInfoLimit)), mention: "abc.narinfo larger than 1048576 bytes"},
		{name: "a body that never ends",
			h: endless(strings.Repeat("References: x\n", 1000), 0), mention: "abc.narinfo larger than 1048576 bytes"},
		{name: "a body that never ends, slowly",
			h: endless("References: x\n", 20*time.Millisecond), mention: "timeout after 500ms", maxTime: 3 * time.Second},
		{name: "an HTML page with 200",
			h: func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/html; charset=utf-8")
					_, _ = w.Write([]byte(html))
				}
			}, mention: "answered with an HTML page (text/html), not a binary cache file"},
		{name: "a redirect loop", hits: maxRedirects + 1,
			h: func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, r.URL.Path, http.StatusFound)
				}
			}, mention: "stopped after 10 redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
				h := tt.h(done)
				return func(w http.ResponseWriter, r *http.Request) { hits.Add(1); h(w, r) }
			})
			var obs outcomes
			c := newClient(t, srv.URL, Options{Timeout: 500 * time.Millisecond, Observer: &obs})
			maxTime := tt.maxTime
			if maxTime == 0 {
				maxTime = 3 * time.Second
			}
			within(t, maxTime, func() {
				_, err := c.NarInfo(t.Context(), "abc")
				checkErr(t, err, ErrUnavailable, "upstream "+srv.URL+": "+tt.mention)
			})
			if obs.count("narinfo/error") != 1 || obs.count("narinfo/not_found") != 0 {
				t.Errorf("observed %v, want one narinfo error", obs.seen)
			}
			if tt.hits != 0 && hits.Load() != tt.hits {
				t.Errorf("%d requests, want %d", hits.Load(), tt.hits)
			}
		})
	}
}

// TestHostileNAR: an HTML page instead of a NAR is refused at its headers,
// saying so, before any byte reaches a client.
func TestHostileNAR(t *testing.T) {
	srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>Not a NAR</html>"))
		}
	})
	c := newClient(t, srv.URL, Options{})
	_, _, err := c.NAR(t.Context(), c.join("nar/x.nar.xz"))
	checkErr(t, err, ErrUnavailable, "HTML page")
}
