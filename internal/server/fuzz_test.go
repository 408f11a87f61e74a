package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// FuzzRequest sends any request line net/http accepts to the real server
// (routing, name checks, cache, store, one fake upstream) over a cache dir
// with a secret next to it. It must not panic, must not answer 5xx, must
// never show the secret, and may ask the upstream only about a name that
// is a path of plain names (see validLookup).
func FuzzRequest(f *testing.F) {
	parent := f.TempDir()
	dir := filepath.Join(parent, "cache")
	const secret = "SECRET-fuzz-5e1f"
	for _, p := range []string{filepath.Join(parent, "secret"), filepath.Join(dir, "secret")} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(secret), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	fu := fakeupstream.New(f)
	p := newProxy(f, config{ups: []*fakeupstream.Upstream{fu}, dir: dir, writeToken: "tok"})
	h := p.srv.Config.Handler

	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	for _, target := range []string{
		"/nix-cache-info", "/" + hash + ".narinfo", "/" + hash + ".ls", "/log/" + hash + "-hello",
		"/nar/" + strings.Repeat("0", 20) + hash + ".nar.xz", "/../secret", "/nar/..%2fsecret",
		"/nar/%252e%252e%252fsecret", "/nar/..\\secret", "//etc/passwd", "/nar/x%00.nar",
		"/nar/%c0%ae%c0%ae%c0%afsecret", "/_/pins", "/metrics", "/",
	} {
		for _, method := range []string{"GET", "HEAD", "PUT"} {
			f.Add(method, target)
		}
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: cache\r\nContent-Length: 5\r\n\r\nhello"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 before any handler runs
		}
		r.RemoteAddr = "192.0.2.1:1234"
		if method == "PUT" {
			r.Header.Set("Authorization", "Bearer tok")
		}
		before := fu.Total()
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s %q took %v", method, target, d)
			}
		}()
		w := httptest.NewRecorder()
		func() {
			defer func() {
				if v := recover(); v != nil && !errors.Is(asError(v), http.ErrAbortHandler) {
					t.Fatalf("%s %q: panic: %v", method, target, v)
				}
			}()
			h.ServeHTTP(w, r)
		}()
		if w.Code >= 500 {
			t.Errorf("%s %q: %d %q", method, target, w.Code, w.Body)
		}
		if bytes.Contains(w.Body.Bytes(), []byte(secret)) {
			t.Fatalf("%s %q: served the secret", method, target)
		}
		if fu.Total() > before && !validLookup(r.URL.Path) {
			t.Errorf("%s %q (path %q) reached the upstream", method, target, r.URL.Path)
		}
	})
}

// validLookup reports whether p may reach the upstream: every segment a
// plain name (no empty or dot segment, no backslash, NUL or byte outside
// printable ASCII), so the proxy never forwards a traversal.
func validLookup(p string) bool {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.ContainsRune(s, '\\') {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] >= 0x7f {
				return false
			}
		}
	}
	// The names the server checks: one of them must be a hash or a store
	// path name, so the request names a path.
	for _, s := range segs {
		if narinfo.ValidHash(strings.TrimSuffix(strings.TrimSuffix(s, ".narinfo"), ".ls")) || narinfo.ValidStorePathName(s) || strings.HasSuffix(s, ".doi") {
			return true
		}
	}
	return false
}

func asError(v any) error {
	if err, ok := v.(error); ok {
		return err
	}
	return nil
}
