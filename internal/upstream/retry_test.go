package upstream

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// flaky answers with the statuses in order (then 200 "ok"), counting hits;
// status -1 closes the connection without an answer, 0 hangs.
func flaky(hits *atomic.Int32, retryAfter string, statuses ...int) func(<-chan struct{}) http.HandlerFunc {
	return func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n := int(hits.Add(1)) - 1
			if n >= len(statuses) {
				_, _ = w.Write([]byte("ok"))
				return
			}
			switch s := statuses[n]; s {
			case -1:
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			case 0:
				hang(r, done)
			default:
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
				w.WriteHeader(s)
			}
		}
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		statuses   []int
		retryAfter string
		callerWait time.Duration // caller's deadline; 0 means none
		want       error         // nil: the body "ok"
		hits       int32
		minTime    time.Duration
		maxTime    time.Duration
	}{
		{name: "503 then ok", statuses: []int{503}, hits: 2},
		{name: "500, 502 then ok", statuses: []int{500, 502}, hits: 3},
		{name: "reset then ok", statuses: []int{-1}, hits: 2},
		{name: "three 504s", statuses: []int{504, 504, 504}, want: ErrUnavailable, hits: 3},
		{name: "404 is an answer", statuses: []int{404}, want: ErrNotFound, hits: 1},
		{name: "501 is not retried", statuses: []int{501}, want: ErrUnavailable, hits: 1},
		{name: "429 waits its Retry-After", statuses: []int{429}, retryAfter: "1", hits: 2, minTime: time.Second},
		{name: "429 with a Retry-After past the cap", statuses: []int{429}, retryAfter: "60", want: ErrUnavailable, hits: 1},
		{name: "429 with a Retry-After past the caller's deadline", statuses: []int{429}, retryAfter: "2",
			callerWait: 1500 * time.Millisecond, want: ErrUnavailable, hits: 1, maxTime: time.Second},
		{name: "timeout is not retried", statuses: []int{0}, want: ErrUnavailable, hits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := newUpstream(t, flaky(&hits, tt.retryAfter, tt.statuses...))
			c := newClient(t, srv.URL, Options{Timeout: 3 * time.Second})
			if tt.statuses[0] == 0 {
				c = newClient(t, srv.URL, Options{Timeout: 200 * time.Millisecond})
			}
			ctx := t.Context()
			if tt.callerWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.callerWait)
				defer cancel()
			}
			start := time.Now()
			body, err := c.NarInfo(ctx, "abc")
			d := time.Since(start)
			checkErr(t, err, tt.want)
			if tt.want == nil && string(body) != "ok" {
				t.Errorf("body %q", body)
			}
			if got := hits.Load(); got != tt.hits {
				t.Errorf("%d requests, want %d", got, tt.hits)
			}
			if d < tt.minTime || (tt.maxTime > 0 && d > tt.maxTime) {
				t.Errorf("took %v, want between %v and %v", d, tt.minTime, tt.maxTime)
			}
		})
	}
}

func TestNARRetries(t *testing.T) {
	var hits atomic.Int32
	srv := newUpstream(t, flaky(&hits, "", 503, -1))
	c := newClient(t, srv.URL, Options{})
	body, _, err := c.NAR(t.Context(), c.join("nar/x.nar"))
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	if hits.Load() != 3 {
		t.Errorf("%d requests, want 3", hits.Load())
	}
	hits.Store(0)
	c = newClient(t, srv.URL, Options{Attempts: 1})
	if _, _, err := c.NAR(t.Context(), c.join("nar/x.nar")); err == nil || hits.Load() != 1 {
		t.Errorf("Attempts 1: err %v after %d requests, want an error after 1", err, hits.Load())
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":     0,
		"3":    3 * time.Second,
		"-1":   0,
		"soon": 0,
		now.Add(2 * time.Second).Format(http.TimeFormat): 2 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):      0,
		strconv.Itoa(1 << 40):                            (1 << 20) * time.Second,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}
