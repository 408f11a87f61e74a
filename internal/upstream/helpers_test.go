package upstream

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// newUpstream starts a fake upstream. The handler gets a channel closed when
// the test ends, so handlers that hang always exit before the server closes.
func newUpstream(t *testing.T, h func(done <-chan struct{}) http.HandlerFunc) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(h(done))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // LIFO: runs before srv.Close
	return srv
}

// hang blocks until the client gives up or the test ends.
func hang(r *http.Request, done <-chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-done:
	}
}

// static serves a fixed status and body.
func static(status int, body string) func(<-chan struct{}) http.HandlerFunc {
	return func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}
	}
}

func newClient(t *testing.T, base string, opts Options) *Client {
	t.Helper()
	c, err := New(base, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", base, err)
	}
	return c
}

// checkErr asserts err matches want (nil means no error) and mentions
// every string in contains.
func checkErr(t *testing.T, err, want error, contains ...string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v does not wrap %v", err, want)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// within fails the test if f takes longer than max.
func within(t *testing.T, max time.Duration, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if d := time.Since(start); d > max {
		t.Errorf("took %v, want at most %v", d, max)
	}
}
