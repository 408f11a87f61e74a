package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"context"
	"errors"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
	"os"
	"path/filepath"
	"time"
)

const (
	loopback4 = "127.0.0.1:40000"
	loopback6 = "[::1]:40000"
	remote    = "192.0.2.1:1234"
)

func TestAuth(t *testing.T) {
	const token = "s3cret"
	tests := []struct {
		name   string
		token  string // the server's
		remote string
		auth   string // Authorization header sent
		want   int
	}{
		{"no token, loopback", "", loopback4, "", http.StatusOK},
		{"no token, IPv6 loopback", "", loopback6, "", http.StatusOK},
		{"no token, LAN client", "", remote, "", http.StatusForbidden},
		{"no token, LAN client with a bearer", "", remote, "Bearer " + token, http.StatusForbidden},
		{"no token, unparsable remote", "", "pipe", "", http.StatusForbidden},
		{"token, loopback without bearer", token, loopback4, "", http.StatusUnauthorized},
		{"token, LAN client without bearer", token, remote, "", http.StatusUnauthorized},
		{"token, wrong bearer", token, remote, "Bearer nope", http.StatusUnauthorized},
		{"token, prefix of the token", token, remote, "Bearer s3cre", http.StatusUnauthorized},
		{"token, empty bearer", token, remote, "Bearer ", http.StatusUnauthorized},
		{"token, basic auth", token, remote, "Basic czNjcmV0Og==", http.StatusUnauthorized},
		{"token, right bearer from the LAN", token, remote, "Bearer " + token, http.StatusOK},
		{"token, right bearer from loopback", token, loopback4, "Bearer " + token, http.StatusOK},
	}
	envs := map[string]*env{"": newEnv(t, ""), token: newEnv(t, token)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := envs[tt.token].do(http.MethodGet, "/_/pins", "", tt.remote, tt.auth)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if tt.want == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", w.Header().Get("WWW-Authenticate"))
			}
			if tt.want != http.StatusOK {
				assertJSONError(t, w.Body.Bytes())
			}
		})
	}
	// The cache itself stays open to everyone: only /_/ is guarded.
	if w := envs[token].do(http.MethodGet, "/nix-cache-info", "", remote, ""); w.Code != http.StatusOK {
		t.Errorf("nix-cache-info from the LAN with a token set: %d", w.Code)
	}
}

// assertJSONError checks body is {"error": "<something>"}.
func assertJSONError(t *testing.T, body []byte) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Errorf("error body is not {\"error\": ...}: %q (%v)", body, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, "")
	hash := fakeupstream.RandomHash()
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"check: bad JSON", http.MethodPost, "/_/check", `{"paths": [`, http.StatusBadRequest},
		{"check: not an object", http.MethodPost, "/_/check", `"x"`, http.StatusBadRequest},
		{"check: unknown field", http.MethodPost, "/_/check", `{"paths": ["` + hash + `"], "bogus": 1}`, http.StatusBadRequest},
		{"check: bad path", http.MethodPost, "/_/check", `{"paths": ["/nix/store/nope"]}`, http.StatusBadRequest},
		{"check: no paths", http.MethodPost, "/_/check", `{"paths": []}`, http.StatusBadRequest},
		{"check: empty body", http.MethodPost, "/_/check", "", http.StatusBadRequest},
		{"prefetch: bad path", http.MethodPost, "/_/prefetch", `{"paths": ["hello"]}`, http.StatusBadRequest},
		{"prefetch: no paths", http.MethodPost, "/_/prefetch", `{}`, http.StatusBadRequest},
		{"prefetch: misses, log empty", http.MethodPost, "/_/prefetch", `{"misses": true}`, http.StatusBadRequest},
		{"prefetch: unknown field", http.MethodPost, "/_/prefetch", `{"paths": ["` + hash + `"], "clozure": true}`, http.StatusBadRequest},
		{"pin: bad path", http.MethodPost, "/_/pins", `{"paths": ["x"]}`, http.StatusBadRequest},
		{"pin: no paths", http.MethodPost, "/_/pins", `{"paths": null}`, http.StatusBadRequest},
		{"pin: bad JSON", http.MethodPost, "/_/pins", `paths`, http.StatusBadRequest},
		{"unpin: bad path", http.MethodDelete, "/_/pins", `{"paths": ["x"]}`, http.StatusBadRequest},
		{"unpin: not pinned", http.MethodDelete, "/_/pins", `{"paths": ["` + hash + `"]}`, http.StatusNotFound},
		{"misses: bad since", http.MethodGet, "/_/misses?since=yesterday", "", http.StatusBadRequest},
		{"misses: bad outcome", http.MethodGet, "/_/misses?outcome=lost", "", http.StatusBadRequest},
		{"job: unknown id", http.MethodGet, "/_/prefetch/0123abcd", "", http.StatusNotFound},
		{"job: unknown id, waiting", http.MethodGet, "/_/prefetch/0123abcd?wait=1s", "", http.StatusNotFound},
		{"job: bad wait", http.MethodGet, "/_/prefetch/0123abcd?wait=soon", "", http.StatusBadRequest},
		{"unknown endpoint", http.MethodGet, "/_/nope", "", http.StatusNotFound},
		{"wrong method", http.MethodPut, "/_/check", `{}`, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do(tt.method, tt.path, tt.body, loopback4, "")
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			assertJSONError(t, w.Body.Bytes())
		})
	}
	if n := e.Upstream.Total(); n != 0 {
		t.Errorf("bad requests reached the upstream %d times", n)
	}
	if jobs := e.Prefetch.List(); len(jobs) != 0 {
		t.Errorf("bad requests started jobs: %+v", jobs)
	}
}

// TestEmptyListsAreArrays checks the list endpoints answer [] rather than
// null when there is nothing to list, so `jq '.[]'` works on a new cache.
func TestEmptyListsAreArrays(t *testing.T) {
	e := newEnv(t, "")
	for _, path := range []string{"/_/misses", "/_/pins", "/_/prefetch"} {
		w := e.do(http.MethodGet, path, "", loopback4, "")
		if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "[]" {
			t.Errorf("GET %s: %d %q, want 200 []", path, w.Code, w.Body)
		}
	}
}

// TestMethodNotAllowed: a 405 from the admin API says which methods the
// endpoint takes, in the Allow header RFC 9110 requires of it.
func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, "")
	tests := []struct{ method, path, allow string }{
		{http.MethodDelete, "/_/misses", "GET"},
		{http.MethodGet, "/_/check", "POST"},
		{http.MethodPut, "/_/pins", "GET, POST, DELETE"},
		{http.MethodDelete, "/_/prefetch/x", "GET"},
	}
	for _, tt := range tests {
		w := e.do(tt.method, tt.path, "{}", "127.0.0.1:1234", "")
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tt.method, tt.path, w.Code, w.Header().Get("Allow"), tt.allow)
		}
	}
}

// TestVerifyRoundTrip starts a verify job through the client and follows
// it with the long poll to its end; a bad file is named in it.
func TestVerifyRoundTrip(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	name := strings.Repeat("1", 52) + ".nar"
	os.MkdirAll(filepath.Join(e.Dir, "nar", "11"), 0o755)
	if err := os.WriteFile(filepath.Join(e.Dir, "nar", "11", name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := e.client.Verify(ctx, verify.Request{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	var problems []verify.Problem
	for st.State == verify.StateRunning || len(st.Problems) > 0 {
		problems = append(problems, st.Problems...)
		if st.State != verify.StateRunning {
			break
		}
		if st, err = e.client.WaitVerify(ctx, st.ID, 5*time.Second, st.From+len(st.Problems)); err != nil {
			t.Fatal(err)
		}
	}
	if len(problems) != 1 || problems[0].Name != "nar/11/"+name || !problems[0].Repaired || !st.Sound() {
		t.Errorf("verify: %+v, problems %+v", st, problems)
	}
	if _, err := e.client.WaitVerify(ctx, "nope", time.Second, 0); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("WaitVerify of an unknown job: %v", err)
	}
	if w := e.do("GET", "/_/verify/"+st.ID+"?from=x", "", "127.0.0.1:1", ""); w.Code != 400 {
		t.Errorf("from=x: %d", w.Code)
	}
}
