package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// authLog records the Authorization header of each request by path.
type authLog struct {
	mu   sync.Mutex
	seen map[string]string
}

func (l *authLog) record(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]string{}
	}
	l.seen[r.Host+r.URL.Path] = r.Header.Get("Authorization")
}

func (l *authLog) get(host, path string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.seen[host+path]
	return v, ok
}

func TestCredentials(t *testing.T) {
	var log authLog
	// storage plays the cachix redirect target: same IP, other port.
	var upstreamURL string
	storage := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			log.record(r)
			if r.URL.Path == "/bounce" {
				http.Redirect(w, r, upstreamURL+"/back", http.StatusFound)
				return
			}
			_, _ = w.Write([]byte("nar bytes"))
		}
	})
	upstream := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			log.record(r)
			switch r.URL.Path {
			case "/nar/x.nar":
				http.Redirect(w, r, storage.URL+"/blob", http.StatusFound)
			case "/nar/bounce.nar":
				http.Redirect(w, r, storage.URL+"/bounce", http.StatusFound)
			case "/nar/loop.nar":
				http.Redirect(w, r, "/nar/loop.nar", http.StatusFound)
			default:
				_, _ = w.Write([]byte("ok"))
			}
		}
	})
	upstreamURL = upstream.URL
	upHost := strings.TrimPrefix(upstream.URL, "http://")
	storeHost := strings.TrimPrefix(storage.URL, "http://")
	netrc, err := ParseNetrc(strings.NewReader("machine 127.0.0.1 login u password p\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, upstream.URL, Options{Netrc: netrc})
	basic := "Basic dTpw" // u:p
	ctx := t.Context()

	if _, err := c.NarInfo(ctx, "abc"); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"x.nar", "bounce.nar"} {
		body, _, err := c.NAR(ctx, mustResolve(t, c, "nar/"+rel))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, body)
		body.Close()
	}
	_, _, err = c.NAR(ctx, mustResolve(t, c, "nar/loop.nar"))
	checkErr(t, err, ErrUnavailable, "redirects")

	tests := []struct {
		name, host, path, want string
	}{
		{"narinfo on upstream", upHost, "/abc.narinfo", basic},
		{"NAR on upstream", upHost, "/nar/x.nar", basic},
		{"redirect to other port", storeHost, "/blob", ""},
		{"redirect chain via other host", storeHost, "/bounce", ""},
		{"redirect back to upstream", upHost, "/back", basic},
		{"redirect loop on upstream", upHost, "/nar/loop.nar", basic},
	}
	for _, tt := range tests {
		got, ok := log.get(tt.host, tt.path)
		if !ok {
			t.Errorf("%s: %s%s was not requested", tt.name, tt.host, tt.path)
		} else if got != tt.want {
			t.Errorf("%s: Authorization = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestCredentialsOtherMachine(t *testing.T) {
	var log authLog
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { log.record(r) }))
	defer srv.Close()
	netrc, _ := ParseNetrc(strings.NewReader("machine cache.example.org login u password p"))
	c := newClient(t, srv.URL, Options{Netrc: netrc})
	if _, err := c.NarInfo(t.Context(), "abc"); err != nil {
		t.Fatal(err)
	}
	if got, _ := log.get(strings.TrimPrefix(srv.URL, "http://"), "/abc.narinfo"); got != "" {
		t.Errorf("Authorization = %q for a host without netrc entry", got)
	}
}
