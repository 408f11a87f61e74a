package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

func TestNames(t *testing.T) {
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: []*fakeupstream.Upstream{fu}})
	hash := "0123456789abcdfghijklmnpqrsvwxyz" // every Nix base32 character
	nar52 := strings.Repeat("0", 20) + hash

	tests := []struct {
		name   string
		method string // default GET
		path   string
		want   int
		// asks says the upstream is consulted (a plausible miss);
		// everything else must be answered without it.
		asks bool
	}{
		{name: "hash too short", path: "/" + hash[:31] + ".narinfo", want: 400},
		{name: "hash too long", path: "/" + hash + "0.narinfo", want: 400},
		{name: "hash with e", path: "/e" + hash[1:] + ".narinfo", want: 400},
		{name: "hash with o", path: "/o" + hash[1:] + ".narinfo", want: 400},
		{name: "hash with t", path: "/t" + hash[1:] + ".narinfo", want: 400},
		{name: "hash with u", path: "/u" + hash[1:] + ".narinfo", want: 400},
		{name: "hash uppercase", path: "/" + strings.ToUpper(hash) + ".narinfo", want: 400},
		{name: "hash uppercase HEAD", method: http.MethodHead, path: "/A" + hash[1:] + ".narinfo", want: 400},
		{name: "empty hash", path: "/.narinfo", want: 400},
		{name: "hash traversal", path: "/..%2Findex.db.narinfo", want: 400},
		{name: "listing bad hash", path: "/" + hash[:31] + "e.ls", want: 400},
		{name: "NAR name too short", path: "/nar/" + nar52[1:] + ".nar.xz", want: 400},
		{name: "NAR bad suffix", path: "/nar/" + nar52 + ".nar.exe", want: 400},
		{name: "NAR no .nar", path: "/nar/" + nar52 + ".xz", want: 400},
		{name: "NAR bad character", path: "/nar/" + strings.Repeat("e", 52) + ".nar", want: 400},
		{name: "NAR dotdot", path: "/nar/..", want: 400},
		{name: "NAR escaped traversal", path: "/nar/..%2F..%2Findex.db", want: 400},
		{name: "NAR traversal in name", path: "/nar/" + nar52[:50] + "..%2F.nar", want: 400},
		{name: "NAR bad name HEAD", method: http.MethodHead, path: "/nar/x.nar", want: 400},
		{name: "log bad name", path: "/log/..%2Findex.db", want: 400},
		// Unescaped ".." makes extra segments: no route matches at all.
		{name: "NAR raw traversal", path: "/nar/../index.db", want: 404},
		{name: "unknown narinfo", path: "/" + hash + ".narinfo", want: 404, asks: true},
		{name: "unknown narinfo HEAD", method: http.MethodHead, path: "/" + strings.Repeat("1", 32) + ".narinfo", want: 404, asks: true},
		{name: "unknown NAR", path: "/nar/" + nar52 + ".nar.xz", want: 404},
		{name: "unknown NAR HEAD", method: http.MethodHead, path: "/nar/" + nar52 + ".nar", want: 404},
		{name: "unknown top-level file", path: "/index.db", want: 404},
		{name: "unknown route", path: "/a/b/c", want: 404},
		{name: "PUT not allowed", method: http.MethodPut, path: "/" + hash + ".narinfo", want: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			before := fu.Total()
			r := p.do(method, tt.path)
			if r.status != tt.want {
				t.Errorf("%s %s: status %d, want %d (%s)", method, tt.path, r.status, tt.want, r.body)
			}
			if asked := fu.Total() > before; asked != tt.asks {
				t.Errorf("%s %s: upstream asked = %v, want %v", method, tt.path, asked, tt.asks)
			}
		})
	}
}

func TestCacheInfo(t *testing.T) {
	fu := fakeupstream.New(t)
	tests := []struct {
		priority int
		want     string
	}{
		{0, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"},
		{41, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"},
	}
	for _, tt := range tests {
		p := newProxy(t, config{ups: []*fakeupstream.Upstream{fu}, priority: tt.priority})
		r := p.get("/nix-cache-info")
		if r.status != http.StatusOK || string(r.body) != tt.want {
			t.Errorf("priority %d: got %d %q, want 200 %q", tt.priority, r.status, r.body, tt.want)
		}
		if ct := r.header.Get("Content-Type"); ct != "text/x-nix-cache-info" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	if n := fu.Total(); n != 0 {
		t.Errorf("nix-cache-info asked the upstream %d times", n)
	}
}

// TestMethodNotAllowed: a 405 says which methods the route takes, in the
// Allow header RFC 9110 requires of it.
func TestMethodNotAllowed(t *testing.T) {
	p := newProxy(t, config{ups: []*fakeupstream.Upstream{fakeupstream.New(t)}})
	hash := strings.Repeat("1", 32)
	tests := []struct {
		method, path, allow string
	}{
		// Uploads are off: PUT is not allowed either.
		{http.MethodDelete, "/" + hash + ".narinfo", "GET, HEAD"},
		{http.MethodPut, "/" + hash + ".narinfo", "GET, HEAD"},
		{http.MethodPost, "/" + hash + ".ls", "GET, HEAD"},
		{http.MethodDelete, "/nar/" + strings.Repeat("1", 52) + ".nar.xz", "GET, HEAD"},
		{http.MethodPost, "/nix-cache-info", "GET, HEAD"},
		{http.MethodPost, "/log/" + hash + "-x.drv", "GET"},
		{http.MethodPut, "/log/" + hash + "-x.drv", "GET"},
		{http.MethodPost, "/healthz", "GET, HEAD"}, // HEAD is /{file}'s: a 404
	}
	for _, tt := range tests {
		r := p.do(tt.method, tt.path)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tt.method, tt.path, r.status, r.header.Get("Allow"), tt.allow)
		}
	}
	// Allow lists HEAD for nix-cache-info: it must answer.
	if r := p.do(http.MethodHead, "/nix-cache-info"); r.status != http.StatusOK {
		t.Errorf("HEAD /nix-cache-info: %d, want 200", r.status)
	}
}
