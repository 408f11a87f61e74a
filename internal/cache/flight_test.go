package cache

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

func TestFlightWait(t *testing.T) {
	errBoom := errors.New("boom")
	for _, want := range []error{nil, errBoom} {
		fl := newFlight("x")
		got := make(chan error, 1)
		go func() { got <- fl.wait(context.Background()) }()
		fl.progress(10)
		fl.finish(want)
		select {
		case err := <-got:
			if err != want {
				t.Errorf("wait = %v, want %v", err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("wait did not return after finish")
		}
		if st := fl.state(); st.written != 10 || !st.done || st.err != want {
			t.Errorf("state = %d, %v, %v", st.written, st.done, st.err)
		}
	}
}

func TestFlightWaitCancelled(t *testing.T) {
	fl := newFlight("x")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := fl.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait = %v, want context.Canceled", err)
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
	if err := c.follow(rec, req, fl, src); err != nil {
		t.Fatalf("follow: %v", err)
	}
	if rec.Code != http.StatusOK || rec.Body.String() != string(body) {
		t.Errorf("got %d %q, want 200 %q", rec.Code, rec.Body, body)
	}
	if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q", got)
	}
}
