package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// TestFlightWatch: a watcher sees every state a fill moves the flight
// through, ends with the outcome, and the state follows from the error.
func TestFlightWatch(t *testing.T) {
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		err  error
		want flightState
	}{
		{nil, stored},
		{fmt.Errorf("%w: disk full", errNotKept), notKept},
		{errBoom, failed},
	} {
		fl := newFlight("x", "u")
		type result struct {
			last flightView
			seen []int64
			err  error
		}
		got := make(chan result, 1)
		started := make(chan struct{})
		go func() {
			var seen []int64
			last, err := fl.watch(context.Background(), func(v flightView) error {
				if v.state == fetching {
					close(started)
				}
				seen = append(seen, v.written)
				return nil
			})
			got <- result{last, seen, err}
		}()
		<-started
		fl.start(nil, 10)
		fl.progress(4)
		fl.progress(6)
		fl.finish(tc.err)
		select {
		case r := <-got:
			if r.err != nil || r.last.state != tc.want || r.last.err != tc.err || r.last.written != 10 || r.last.size != 10 {
				t.Errorf("finish(%v): watch = %+v, %v; want state %v", tc.err, r.last, r.err, tc.want)
			}
			if r.seen[len(r.seen)-1] != 10 {
				t.Errorf("finish(%v): watcher saw %v, last not 10", tc.err, r.seen)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not return after finish")
		}
	}
}

func TestFlightWatchCancelled(t *testing.T) {
	fl := newFlight("x", "u")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fl.watch(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("watch = %v, want context.Canceled", err)
	}
}

// TestFlightOnce: start and finish are the fill's, once each; a second
// call is a bug that must not pass silently.
func TestFlightOnce(t *testing.T) {
	for name, twice := range map[string]func(*flight){
		"start twice":        func(fl *flight) { fl.start(nil, 1); fl.start(nil, 1) },
		"finish twice":       func(fl *flight) { fl.finish(nil); fl.finish(nil) },
		"start after finish": func(fl *flight) { fl.finish(nil); fl.start(nil, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			twice(newFlight("x", "u"))
		}()
	}
}

// TestFlightFindsStoredNAR: a request that missed the store just before the
// previous download committed starts a new flight. That flight must serve
// the stored file, not fetch it again (here the upstream is not even
// configured, so a fetch would fail).
func TestFlightFindsStoredNAR(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := New(Options{Store: st, Upstreams: upstream.NewGroup(nil, 0), SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const name = "0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	body := []byte("a NAR committed a moment ago")
	w, err := st.CreateNAR(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	src := store.NARSource{Upstream: "http://gone.invalid", Size: int64(len(body))}
	fl := c.join(t.Context(), name, src)
	defer c.leave(fl)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/nar/"+name, nil)
	if err := c.serveFlight(rec, req, fl, src); err != nil {
		t.Fatalf("serveFlight: %v", err)
	}
	if rec.Code != http.StatusOK || rec.Body.String() != string(body) {
		t.Errorf("got %d %q, want 200 %q", rec.Code, rec.Body, body)
	}
	if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q", got)
	}
}
