// Package s3store keeps NAR files and narinfos in an S3-compatible bucket
// (AWS S3, MinIO, Garage, Ceph RGW, R2, versitygw), so several proxies on
// the same bucket serve what any of them stored. It implements
// store.NARFiles and store.Shared.
//
// The bucket is laid out as a Nix binary cache, so Nix can also read it
// directly as an s3:// store:
//
//	PREFIX/nar/<name>              NAR files, content-addressed, never overwritten
//	PREFIX/<hash>.narinfo          narinfos, published only after their NAR
//	PREFIX/_proxy/narsrc/<name>    where each NAR comes from (JSON), for refills
package s3store

import (
	"fmt"
	"net/url"
	"strings"
)

// Location is a parsed s3:// URL. The query parameters are those of Nix's
// own S3 store URLs.
type Location struct {
	Bucket   string
	Prefix   string // "" or a path without leading or trailing slash
	Endpoint string // host[:port]; "" means AWS
	Scheme   string // https unless scheme=http
	Region   string // default us-east-1, as in Nix
	Profile  string // shared-credentials profile; "" means the default chain
}

// ParseURL parses s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=http&region=R&profile=P.
func ParseURL(raw string) (Location, error) {
	var loc Location
	u, err := url.Parse(raw)
	if err != nil {
		return loc, fmt.Errorf("%w: %w", ErrURL, err)
	}
	if u.Scheme != "s3" {
		return loc, fmt.Errorf("%w: %q is not s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=http&region=R", ErrURL, raw)
	}
	if u.Host == "" {
		return loc, fmt.Errorf("%w: %q names no bucket", ErrURL, raw)
	}
	loc.Bucket = u.Host
	loc.Prefix = strings.Trim(u.Path, "/")
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "scheme", "region", "profile":
		default:
			return loc, fmt.Errorf("%w: unknown parameter %q (want endpoint, scheme, region, profile)", ErrURL, k)
		}
	}
	loc.Endpoint = q.Get("endpoint")
	loc.Scheme = q.Get("scheme")
	switch loc.Scheme {
	case "":
		loc.Scheme = "https"
	case "http", "https":
	default:
		return loc, fmt.Errorf("%w: scheme=%q, want http or https", ErrURL, loc.Scheme)
	}
	loc.Region = q.Get("region")
	if loc.Region == "" {
		loc.Region = "us-east-1"
	}
	loc.Profile = q.Get("profile")
	return loc, nil
}

// String is the location as a URL, for logs and the status page.
func (l Location) String() string {
	u := url.URL{Scheme: "s3", Host: l.Bucket}
	if l.Prefix != "" {
		u.Path = "/" + l.Prefix
	}
	q := url.Values{}
	if l.Endpoint != "" {
		q.Set("endpoint", l.Endpoint)
	}
	if l.Scheme != "https" {
		q.Set("scheme", l.Scheme)
	}
	if l.Region != "us-east-1" {
		q.Set("region", l.Region)
	}
	if l.Profile != "" {
		q.Set("profile", l.Profile)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// key is the object key of a path below the prefix.
func (l Location) key(p string) string {
	if l.Prefix == "" {
		return p
	}
	return l.Prefix + "/" + p
}
