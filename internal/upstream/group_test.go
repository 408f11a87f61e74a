package upstream

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// behaviour is what one fake upstream in a group test does.
type behaviour struct {
	status int    // 0 means hang until cancelled
	body   string // sent with the status
}

func (b behaviour) handler(hits *atomic.Int32) func(<-chan struct{}) http.HandlerFunc {
	return func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if b.status == 0 {
				hang(r, done)
				return
			}
			w.WriteHeader(b.status)
			_, _ = w.Write([]byte(b.body))
		}
	}
}

var errBadSig = errors.New("bad signature")

func TestGroupNarInfo(t *testing.T) {
	rejectFirst := func(_ *Client, body []byte) error {
		if string(body) == "first" {
			return errBadSig
		}
		return nil
	}
	rejectAll := func(*Client, []byte) error { return errBadSig }
	tests := []struct {
		name      string
		upstreams []behaviour
		accept    func(*Client, []byte) error
		timeout   time.Duration // client Timeout
		winner    int           // index of the answering upstream, -1 for error
		wantErr   []error       // all must match
		notErr    error         // must not match
		mention   []string
		maxTime   time.Duration
		wantHits  []int32 // requests per upstream; nil means don't check
	}{
		{name: "first answers, second never asked",
			upstreams: []behaviour{{200, "first"}, {200, "second"}},
			winner:    0, wantHits: []int32{1, 0}},
		{name: "first 404, second has it",
			upstreams: []behaviour{{404, ""}, {200, "second"}},
			winner:    1},
		{name: "first 500, second has it",
			upstreams: []behaviour{{500, ""}, {200, "second"}},
			winner:    1},
		{name: "first 500, second 404",
			upstreams: []behaviour{{500, ""}, {404, ""}},
			winner:    -1, wantErr: []error{ErrUnavailable}, notErr: ErrNotFound,
			mention: []string{"500 Internal Server Error", "404 Not Found"}},
		{name: "first hangs past hedge",
			upstreams: []behaviour{{0, ""}, {200, "second"}},
			timeout:   5 * time.Second, winner: 1, maxTime: time.Second},
		{name: "first hangs until timeout, second 404",
			upstreams: []behaviour{{0, ""}, {404, ""}},
			timeout:   300 * time.Millisecond, winner: -1,
			wantErr: []error{ErrUnavailable}, notErr: ErrNotFound,
			mention: []string{"timeout after 300ms", "404 Not Found"}, maxTime: 2 * time.Second},
		{name: "accept rejects first",
			upstreams: []behaviour{{200, "first"}, {200, "second"}},
			accept:    rejectFirst, winner: 1},
		{name: "all rejected",
			upstreams: []behaviour{{200, "first"}, {200, "second"}},
			accept:    rejectAll, winner: -1,
			wantErr: []error{ErrNotFound, errBadSig}, notErr: ErrUnavailable,
			mention: []string{"bad signature"}},
		{name: "all 404",
			upstreams: []behaviour{{404, ""}, {410, ""}, {403, ""}},
			winner:    -1, wantErr: []error{ErrNotFound}, notErr: ErrUnavailable,
			mention: []string{"404", "410", "403"}},
		{name: "no upstreams", winner: -1, wantErr: []error{ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := make([]atomic.Int32, len(tt.upstreams))
			var clients []*Client
			for i, b := range tt.upstreams {
				srv := newUpstream(t, b.handler(&hits[i]))
				clients = append(clients, newClient(t, srv.URL, Options{Timeout: tt.timeout}))
			}
			g := NewGroup(clients, 50*time.Millisecond)
			maxTime := tt.maxTime
			if maxTime == 0 {
				maxTime = 5 * time.Second
			}
			within(t, maxTime, func() {
				ans, err := g.NarInfo(t.Context(), "abc", tt.accept)
				if tt.winner < 0 {
					if err == nil {
						t.Fatalf("got answer from %v, want error", ans.Client)
					}
					for _, want := range tt.wantErr {
						checkErr(t, err, want, tt.mention...)
					}
					if tt.notErr != nil && errors.Is(err, tt.notErr) {
						t.Errorf("error %v wraps %v", err, tt.notErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if ans.Client != clients[tt.winner] || string(ans.Body) != tt.upstreams[tt.winner].body {
					t.Errorf("answer %q from %v, want %q from %v", ans.Body, ans.Client, tt.upstreams[tt.winner].body, clients[tt.winner])
				}
			})
			for i, want := range tt.wantHits {
				if got := hits[i].Load(); got != want {
					t.Errorf("upstream %d got %d requests, want %d", i, got, want)
				}
			}
		})
	}
}

func TestGroupCancelsLosers(t *testing.T) {
	cancelled := make(chan struct{})
	slow := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				close(cancelled)
			case <-done:
			}
		}
	})
	fast := newUpstream(t, static(200, "fast"))
	g := NewGroup([]*Client{
		newClient(t, slow.URL, Options{}),
		newClient(t, fast.URL, Options{}),
	}, 50*time.Millisecond)
	if _, err := g.NarInfo(t.Context(), "abc", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Error("the losing request was not cancelled")
	}
}

func TestGroupCallerCancel(t *testing.T) {
	var hits atomic.Int32
	var clients []*Client
	for range 2 {
		srv := newUpstream(t, behaviour{}.handler(&hits))
		clients = append(clients, newClient(t, srv.URL, Options{}))
	}
	g := NewGroup(clients, 0)
	if got := g.Clients(); len(got) != 2 || got[0] != clients[0] {
		t.Errorf("Clients() = %v", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	within(t, time.Second, func() {
		_, err := g.NarInfo(ctx, "abc", nil)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want the caller's deadline", err)
		}
	})
}

func TestGroupErrorMessage(t *testing.T) {
	a := newUpstream(t, static(502, ""))
	b := newUpstream(t, static(404, ""))
	g := NewGroup([]*Client{newClient(t, a.URL, Options{}), newClient(t, b.URL, Options{})}, 0)
	_, err := g.NarInfo(t.Context(), "abc", nil)
	want := "narinfo abc: upstream " + a.URL + ": 502 Bad Gateway; upstream " + b.URL + ": 404 Not Found"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Error("multi-line error")
	}
}
