package admin

import (
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// The admin API shares the main listener with the cache, so the CLI finds
// it at the address it already knows. Without a token it trusts the TCP
// peer being loopback, and three things on the same host can fake that:
//
//   - a web page in a local browser (CSRF): a cross-site form or fetch with
//     Content-Type text/plain needs no CORS preflight and would be obeyed.
//     Writes therefore need Content-Type application/json, which no browser
//     sends cross-site without a preflight this API never grants; and
//     http.CrossOriginProtection refuses what browsers mark cross-site.
//   - DNS rebinding: a page from evil.example whose name now resolves to
//     127.0.0.1 is same-origin with this API and may read it. Its requests
//     carry Host: evil.example, so without a token only loopback addresses,
//     localhost and the names the operator listens on are answered.
//   - a reverse proxy on the same host: every LAN client it relays arrives
//     from loopback. Proxies say so (Forwarded, X-Forwarded-For, X-Real-IP),
//     and such a request is not local.
//
// With a token none of this matters for authentication: the bearer token is
// the credential, browsers never attach it on their own, and it works from
// anywhere. The Content-Type and cross-origin checks still apply.

// forwardHeaders mark a request relayed by a proxy.
var forwardHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

// guard authenticates admin requests and refuses those a browser or proxy
// could have been tricked into sending; every refusal is a JSON error.
type guard struct {
	token string
	hosts map[string]bool // lower-case Host names answered without a token
	csrf  *http.CrossOriginProtection
}

func newGuard(token string, hosts []string) *guard {
	g := &guard{token: token, hosts: map[string]bool{"localhost": true}, csrf: http.NewCrossOriginProtection()}
	for _, h := range hosts {
		if h != "" {
			g.hosts[strings.ToLower(strings.Trim(h, "[]"))] = true
		}
	}
	g.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "admin API: cross-origin request refused")
	}))
	return g
}

func (g *guard) wrap(next http.Handler) http.Handler {
	checked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := g.check(r); status != 0 {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nix-cache-proxy admin"`)
			}
			writeError(w, status, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
	return g.csrf.Handler(checked)
}

// check returns the status and message refusing r, or 0.
func (g *guard) check(r *http.Request) (int, string) {
	if g.token != "" {
		got, ok := bearer(r)
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(g.token)) != 1 {
			return http.StatusUnauthorized, "admin API: missing or wrong bearer token"
		}
	} else {
		if !fromLoopback(r) {
			return http.StatusForbidden, "admin API answers loopback clients only; set --admin-token to allow others"
		}
		for _, h := range forwardHeaders {
			if r.Header.Get(h) != "" {
				return http.StatusForbidden, "admin API: request relayed by a proxy (" + h + ") is not local; set --admin-token to allow it"
			}
		}
		if !g.localHost(r.Host) {
			return http.StatusForbidden, "admin API: Host " + quote(r.Host) + " is not this machine's; use 127.0.0.1 or localhost, or set --admin-token"
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || ct != "application/json" {
			return http.StatusUnsupportedMediaType, "admin API: " + r.Method + " needs Content-Type: application/json"
		}
	}
	return 0, ""
}

// localHost reports whether host (a Host header, with or without port) is a
// loopback address, localhost or one of the configured names.
func (g *guard) localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback() || g.hosts[ip.String()]
	}
	return g.hosts[strings.TrimSuffix(host, ".")]
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return strconv.Quote(s)
}

func bearer(r *http.Request) (string, bool) {
	const p = "Bearer "
	a := r.Header.Get("Authorization")
	// The scheme is case-insensitive (RFC 9110); the token is not.
	if len(a) <= len(p) || !strings.EqualFold(a[:len(p)], p) {
		return "", false
	}
	return a[len(p):], true
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
