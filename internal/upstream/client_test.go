package upstream

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	tests := []struct {
		base    string
		want    string // String(); empty means New must fail
		problem string
	}{
		{base: "https://cache.nixos.org", want: "https://cache.nixos.org"},
		{base: "https://cache.nixos.org/", want: "https://cache.nixos.org"},
		{base: "http://h:8080/prefix/cache//", want: "http://h:8080/prefix/cache"},
		{base: "HTTPS://h/x", want: "https://h/x"},
		{base: "ftp://h/x", problem: "scheme"},
		{base: "/relative/path", problem: "scheme"},
		{base: "cache.nixos.org", problem: "scheme"},
		{base: "https:///nohost", problem: "host"},
		{base: "https://h/x?priority=40", problem: "query"},
		{base: "https://h/x?", problem: "query"},
		{base: "https://h/x#frag", problem: "fragment"},
		{base: "https://user:pw@h/x", problem: "user info"},
		{base: "https://h/%zz", problem: "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			c, err := New(tt.base, Options{})
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.problem) {
					t.Fatalf("New(%q) = %v, want error about %q", tt.base, err, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		status int
		want   error
		msg    string
	}{
		{http.StatusOK, nil, ""},
		{http.StatusNotFound, ErrNotFound, "404 Not Found"},
		{http.StatusForbidden, ErrNotFound, "403 Forbidden"},
		{http.StatusGone, ErrNotFound, "410 Gone"},
		{http.StatusInternalServerError, ErrUnavailable, "500 Internal Server Error"},
		{http.StatusBadGateway, ErrUnavailable, "502 Bad Gateway"},
		{http.StatusUnauthorized, ErrUnavailable, "401 Unauthorized"},
		{http.StatusTooManyRequests, ErrUnavailable, "429 Too Many Requests"},
		{http.StatusNoContent, ErrUnavailable, "204 No Content"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := newUpstream(t, static(tt.status, "StorePath: /nix/store/x\n"))
			c := newClient(t, srv.URL, Options{})
			ctx := t.Context()

			_, err := c.NarInfo(ctx, "abc")
			checkErr(t, err, tt.want, tt.msg, srv.URL)
			_, err = c.Get(ctx, "log/abc-foo.drv")
			checkErr(t, err, tt.want, tt.msg)
			body, _, err := c.NAR(ctx, mustResolve(t, c, "nar/abc.nar"))
			checkErr(t, err, tt.want, tt.msg)
			if body != nil {
				body.Close()
			}
			if tt.want != nil && body != nil {
				t.Error("NAR returned a body with an error")
			}
		})
	}
}

func TestFetchPaths(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r.URL.RawPath+"|"+r.URL.Path+"|"+r.Header.Get("User-Agent"))
			_, _ = w.Write([]byte("ok"))
		}
	})
	c := newClient(t, srv.URL+"/cache/", Options{UserAgent: "test-agent"})
	ctx := t.Context()
	if b, err := c.NarInfo(ctx, "abc"); err != nil || string(b) != "ok" {
		t.Fatalf("NarInfo = %q, %v", b, err)
	}
	if _, err := c.Get(ctx, "abc.ls"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "log/abc-a b.drv"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"|/cache/abc.narinfo|test-agent",
		"|/cache/abc.ls|test-agent",
		"|/cache/log/abc-a b.drv|test-agent",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, rel := range []string{"", "/etc/passwd", "../x", "log/../../x", "a?b", "a#b", "log//x", "./x"} {
		if _, err := c.Get(ctx, rel); err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) {
			t.Errorf("Get(%q) = %v, want an invalid-path error", rel, err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("invalid paths reached the upstream: %q", got[len(want):])
	}
}

func TestBodyLimit(t *testing.T) {
	big := strings.Repeat("x", narInfoLimit+1)
	tests := []struct {
		name    string
		chunked bool
	}{{"content-length", false}, {"chunked", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					if tt.chunked {
						w.(http.Flusher).Flush()
					}
					_, _ = w.Write([]byte(big))
				}
			})
			c := newClient(t, srv.URL, Options{})
			_, err := c.NarInfo(t.Context(), "abc")
			checkErr(t, err, ErrUnavailable, "larger than")
			// The same size is fine for a listing.
			if b, err := c.Get(t.Context(), "abc.ls"); err != nil || len(b) != len(big) {
				t.Errorf("Get = %d bytes, %v", len(b), err)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		name string
		h    func(done <-chan struct{}) http.HandlerFunc
	}{
		{"no headers", func(done <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { hang(r, done) }
		}},
		{"slow body", func(done <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("StorePath: "))
				w.(http.Flusher).Flush()
				hang(r, done)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newUpstream(t, tt.h)
			c := newClient(t, srv.URL, Options{Timeout: 200 * time.Millisecond})
			within(t, 2*time.Second, func() {
				_, err := c.NarInfo(t.Context(), "abc")
				checkErr(t, err, ErrUnavailable, "timeout after 200ms", srv.URL)
			})
		})
	}
}

func TestCallerCancel(t *testing.T) {
	srv := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { hang(r, done) }
	})
	c := newClient(t, srv.URL, Options{Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	within(t, 2*time.Second, func() {
		_, err := c.NarInfo(ctx, "abc")
		// The caller's deadline is not an upstream outage.
		checkErr(t, err, context.DeadlineExceeded)
		if errors.Is(err, ErrUnavailable) {
			t.Errorf("caller's cancellation reported as outage: %v", err)
		}
	})
}

func TestConnectionRefused(t *testing.T) {
	srv := newUpstream(t, static(200, ""))
	base := srv.URL
	srv.Close()
	c := newClient(t, base, Options{})
	_, err := c.NarInfo(t.Context(), "abc")
	checkErr(t, err, ErrUnavailable, base)
}
