// Package discovery finds LAN caches over DNS-SD on multicast DNS (what
// macOS calls Bonjour): a server advertises the service _nix-cache._tcp
// with its port, its URL path and the public keys its narinfos are signed
// with in TXT records; a relay browses for it.
//
// Discovery adds no trust. Nix checks every signature against its own
// trusted-public-keys whatever cache it talks to; the keys in TXT only let
// a relay refuse a cache that does not even claim a key it was given
// (Accept).
//
// mDNS is github.com/hashicorp/mdns: of the Go modules for it (it,
// grandcat/zeroconf, libp2p/zeroconf, brutella/dnssd) it is the one the
// module proxy serves here, maintained (v1.0.7, 2026), with a small API
// (a Zone to answer from, one Query call) and two dependencies
// (miekg/dns, x/net).
package discovery

import (
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Service is the DNS-SD service type of a Nix binary cache.
const Service = "_nix-cache._tcp"

// TXT keys: "path=/prefix" (the cache's URL path, "/" if absent), and
// "pk=name:base64" once per public key.
const (
	txtPath = "path="
	txtKey  = "pk="
)

// Cache is a cache found on the network.
type Cache struct {
	Instance string   // the advertised instance name (the host's, by default)
	URL      string   // http://addr:port/path, without a trailing slash
	Keys     []string // the public keys it advertises
}

// Accept reports whether c may be used by a relay given trusted keys:
// with none given, any cache; else one that advertises one of them.
func (c Cache) Accept(trusted []string) bool {
	if len(trusted) == 0 {
		return true
	}
	return slices.ContainsFunc(c.Keys, func(k string) bool { return slices.Contains(trusted, k) })
}

// txt returns the TXT strings for path and keys.
func txt(path string, keys []string) []string {
	if path == "" {
		path = "/"
	}
	out := []string{txtPath + path}
	for _, k := range keys {
		out = append(out, txtKey+k)
	}
	return out
}

// cacheOf builds a Cache from an answer's fields; ok is false for an
// answer that names no usable address.
func cacheOf(instance string, ip net.IP, port int, fields []string) (Cache, bool) {
	if ip == nil || port <= 0 || port > 65535 {
		return Cache{}, false
	}
	path := "/"
	var keys []string
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f, txtPath):
			path = f[len(txtPath):]
		case strings.HasPrefix(f, txtKey):
			keys = append(keys, f[len(txtKey):])
		}
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
		return Cache{}, false
	}
	host := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	return Cache{Instance: instance, URL: "http://" + host + strings.TrimSuffix(path, "/"), Keys: keys}, true
}

// stdLogger adapts l for the mdns module, which logs through *log.Logger;
// its lines go at debug level (it logs every malformed packet on the LAN).
func stdLogger(l *slog.Logger) *log.Logger {
	if l == nil {
		return log.New(io.Discard, "", 0)
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
