package discovery

import (
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCacheOf(t *testing.T) {
	ip := net.ParseIP("10.0.0.7")
	for _, tc := range []struct {
		name   string
		ip     net.IP
		port   int
		fields []string
		want   Cache
		ok     bool
	}{
		{"bare", ip, 5575, nil, Cache{URL: "http://10.0.0.7:5575"}, true},
		{"path and keys", ip, 80, []string{"path=/nix/", "pk=a:AAAA", "pk=b:BBBB", "other=x"},
			Cache{URL: "http://10.0.0.7:80/nix", Keys: []string{"a:AAAA", "b:BBBB"}}, true},
		{"ipv6", net.ParseIP("fd00::1"), 5575, []string{"path=/"}, Cache{URL: "http://[fd00::1]:5575"}, true},
		{"no address", nil, 5575, nil, Cache{}, false},
		{"no port", ip, 0, nil, Cache{}, false},
		{"relative path", ip, 1, []string{"path=x"}, Cache{}, false},
		{"query in path", ip, 1, []string{"path=/x?y"}, Cache{}, false},
	} {
		got, ok := cacheOf("", tc.ip, tc.port, tc.fields)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if diff := cmp.Diff(tc.want, got); ok && diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.name, diff)
		}
	}
}

func TestTXTRoundTrip(t *testing.T) {
	keys := []string{"cache.lan-1:abc=", "cache.nixos.org-1:def="}
	c, ok := cacheOf("x", net.ParseIP("10.0.0.1"), 5575, txt("", keys))
	if !ok || c.URL != "http://10.0.0.1:5575" || !cmp.Equal(c.Keys, keys) {
		t.Errorf("got %+v, %v", c, ok)
	}
}

func TestAccept(t *testing.T) {
	c := Cache{Keys: []string{"a:1", "b:2"}}
	for _, tc := range []struct {
		trusted []string
		want    bool
	}{
		{nil, true},
		{[]string{"b:2"}, true},
		{[]string{"c:3"}, false},
	} {
		if got := c.Accept(tc.trusted); got != tc.want {
			t.Errorf("Accept(%q) = %v, want %v", tc.trusted, got, tc.want)
		}
	}
	if (Cache{}).Accept([]string{"a:1"}) {
		t.Error("a cache advertising no key accepted with trusted keys given")
	}
}
