package upstream

import (
	"errors"
	"net/url"
	"testing"
)

func mustResolve(t *testing.T, c *Client, ref string) *url.URL {
	t.Helper()
	u, err := c.ResolveNAR(ref)
	if err != nil {
		t.Fatalf("ResolveNAR(%q): %v", ref, err)
	}
	return u
}

func TestResolveNAR(t *testing.T) {
	tests := []struct {
		name, base, ref string
		want            string // empty: want ErrForeignURL
	}{
		{"relative", "https://cache.nixos.org", "nar/x.nar.xz", "https://cache.nixos.org/nar/x.nar.xz"},
		{"relative with query", "https://cache.nixos.org/", "nar/x.nar?hash=abc", "https://cache.nixos.org/nar/x.nar?hash=abc"},
		{"base with path prefix", "https://h/cache", "nar/x.nar.xz", "https://h/cache/nar/x.nar.xz"},
		{"base with prefix and slash", "https://h/cache/", "nar/x.nar.xz", "https://h/cache/nar/x.nar.xz"},
		{"absolute path", "https://h/cache", "/nar/x.nar", "https://h/nar/x.nar"},
		{"absolute same host", "https://h/cache", "https://h/other/x.nar?sig=1", "https://h/other/x.nar?sig=1"},
		{"absolute same host, explicit port", "https://h", "https://H:443/x.nar", "https://H:443/x.nar"},
		{"absolute same host:port", "http://127.0.0.1:8080/c", "http://127.0.0.1:8080/nar/x", "http://127.0.0.1:8080/nar/x"},
		{"user info and fragment dropped", "https://h", "https://u:p@h/x.nar#f", "https://h/x.nar"},
		{"absolute other host", "https://h/cache", "https://evil.example/x.nar", ""},
		{"subdomain is other host", "https://h.example", "https://cdn.h.example/x.nar", ""},
		{"other port", "http://127.0.0.1:8080", "http://127.0.0.1:8081/x.nar", ""},
		{"other scheme", "https://h", "http://h/x.nar", ""},
		{"file scheme", "https://h", "file:///etc/passwd", ""},
		{"scheme-relative other host", "https://h", "//evil.example/x.nar", ""},
		{"scheme-relative same host", "https://h/c", "//h/nar/x.nar", "https://h/nar/x.nar"},
		{"user info naming the upstream, host elsewhere", "https://h", "https://h@evil.example/x.nar", ""},
		{"user info naming the upstream with a port", "https://h", "https://h:443@evil.example/x.nar", ""},
		{"user info on the upstream itself is dropped", "https://h", "https://evil.example@h/x.nar", "https://h/x.nar"},
		{"scheme without slashes", "https://h", "https:evil.example/x.nar", ""},
		{"upper-case scheme, same origin", "https://h", "HTTPS://h/x.nar", "https://h/x.nar"},
		{"default port spelled out", "http://h", "http://h:80/x.nar", "http://h:80/x.nar"},
		{"loopback IP for a named upstream", "https://h", "https://127.0.0.1/x.nar", ""},
		{"link-local metadata address", "http://h", "http://169.254.169.254/latest/meta-data", ""},
		{"decimal IP for a dotted one", "http://127.0.0.1:8080", "http://2130706433:8080/x.nar", ""},
		{"IPv4-mapped IPv6 for a dotted one", "http://127.0.0.1:8080", "http://[::ffff:127.0.0.1]:8080/x.nar", ""},
		{"trailing dot", "https://h.example", "https://h.example./x.nar", ""},
		{"backslash is a path, on the upstream", "https://h", `\\evil.example\x.nar`, "https://h/%5C%5Cevil.example%5Cx.nar"},
		{"dot segments stay on the upstream", "https://h/c", "../../../../x.nar", "https://h/x.nar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, tt.base, Options{})
			u, err := c.ResolveNAR(tt.ref)
			if tt.want == "" {
				if !errors.Is(err, ErrForeignURL) {
					t.Fatalf("ResolveNAR(%q) = %v, %v; want ErrForeignURL", tt.ref, u, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tt.want {
				t.Errorf("ResolveNAR(%q) = %s, want %s", tt.ref, u, tt.want)
			}
		})
	}
	c := newClient(t, "https://h", Options{})
	for _, ref := range []string{"", "%zz", "https://ev%zzil/x.nar", "http://[::1/x.nar"} {
		if _, err := c.ResolveNAR(ref); err == nil || errors.Is(err, ErrForeignURL) {
			t.Errorf("ResolveNAR(%q) = %v, want a parse error", ref, err)
		}
	}
}
