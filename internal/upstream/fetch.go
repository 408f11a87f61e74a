package upstream

import (
	"context"
	"fmt"
	"io"

	"net/url"
	"strings"
	"time"
)

// Body caps: a narinfo is a few hundred bytes (a few KiB with thousands
// of references), listings and logs can be large but must still fit in
// memory. A body past its cap is the upstream failing, not a miss.
const (
	narInfoLimit = 1 << 20
	fileLimit    = 64 << 20
)

// NarInfo fetches base/<hash>.narinfo and returns its body (at most 1 MiB).
// It fails with ErrNotFound on 404/403/410 and ErrUnavailable otherwise.
func (c *Client) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	if hash == "" || strings.Contains(hash, "/") {
		return nil, fmt.Errorf("upstream %s: invalid hash %q", c.name, hash)
	}
	return c.fetch(ctx, hash+".narinfo", narInfoLimit)
}

// Get fetches base/<rel>, such as "<hash>.ls" or "log/<drv name>", and
// returns its body (at most 64 MiB), with the errors of NarInfo. rel must be
// a plain relative path: no query, fragment, "." or ".." segments.
func (c *Client) Get(ctx context.Context, rel string) ([]byte, error) {
	if !validRel(rel) {
		return nil, fmt.Errorf("upstream %s: invalid path %q", c.name, rel)
	}
	return c.fetch(ctx, rel, fileLimit)
}

// validRel keeps caller-supplied names from escaping the cache's path or
// smuggling in a query.
func validRel(rel string) bool {
	if rel == "" || strings.ContainsAny(rel, "?#\\") {
		return false
	}
	for seg := range strings.SplitSeq(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// join returns base/<rel>; rel is an unescaped path.
func (c *Client) join(rel string) *url.URL {
	u := *c.base
	u.Path = c.base.Path + "/" + rel
	u.RawPath = ""
	if c.base.RawPath != "" {
		// Keep the base's own escaping (say %2F) and escape only rel.
		u.RawPath = c.base.RawPath + "/" + (&url.URL{Path: rel}).EscapedPath()
	}
	return &u
}

// fetch GETs base/<rel> within the client's timeout and reads the whole body,
// failing with ErrUnavailable if it exceeds limit. The breaker may refuse
// it at once, and learns how it went.
func (c *Client) fetch(parent context.Context, rel string, limit int64) ([]byte, error) {
	t, err := c.begin(false)
	if err != nil {
		return nil, err
	}
	body, err := c.get(parent, rel, limit)
	c.end(parent, t, err)
	return body, err
}

// get is fetch without the breaker.
func (c *Client) get(parent context.Context, rel string, limit int64) (body []byte, err error) {
	kind := "other"
	if strings.HasSuffix(rel, ".narinfo") {
		kind = "narinfo"
	}
	start := time.Now()
	defer func() { c.observe(parent, kind, start, err) }()
	ctx, cancel := context.WithTimeoutCause(parent, c.timeout, errTimeout)
	defer cancel()
	resp, err := c.do(parent, ctx, c.join(rel), start.Add(c.timeout), "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	tooLarge := &failure{c.name, fmt.Sprintf("%s larger than %d bytes", rel, limit), ErrUnavailable, nil}
	if resp.ContentLength > limit {
		return nil, tooLarge
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, c.requestError(parent, ctx, err)
	}
	if int64(len(body)) > limit {
		return nil, tooLarge
	}
	return body, nil
}

// drain reads a little of an error body so the connection can be reused;
// error pages are small, and a large one is not worth waiting for.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
}
