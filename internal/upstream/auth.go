package upstream

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// authorize sets or removes Authorization depending on where req goes.
// Go's own redirect rule keeps the header for subdomains; we want an exact
// origin match, and we want it back on a redirect that returns to the
// upstream (Go drops it for good once stripped).
func (c *Client) authorize(req *http.Request) {
	req.Header.Del("Authorization")
	if c.hasAuth && sameOrigin(req.URL, c.base) {
		req.SetBasicAuth(c.login, c.password)
	}
}

func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	c.authorize(req)
	return nil
}

// sameOrigin reports whether a and b share scheme and host:port. The scheme
// counts too, so credentials never travel over a downgrade to plain http.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(hostPort(a), hostPort(b))
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
