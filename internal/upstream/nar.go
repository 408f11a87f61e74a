package upstream

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"time"
)

// ResolveNAR resolves a narinfo's URL field. A relative reference (with or
// without query string) resolves against base + "/", so base
// https://h/cache and "nar/x.nar.xz" give https://h/cache/nar/x.nar.xz. An
// absolute URL (or a "//host/…" reference) is accepted only on the base's
// scheme and host:port; anything else fails with ErrForeignURL, because the
// proxy must neither fetch from nor send credentials to hosts the operator
// did not configure.
func (c *Client) ResolveNAR(ref string) (*url.URL, error) {
	if ref == "" {
		return nil, fmt.Errorf("upstream %s: empty NAR URL", c.name)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: NAR URL %q: %w", c.name, ref, err)
	}
	dir := *c.base
	dir.Path += "/"
	if dir.RawPath != "" {
		dir.RawPath += "/"
	}
	u := dir.ResolveReference(r)
	if !sameOrigin(u, c.base) {
		return nil, fmt.Errorf("%w: %q is not on %s", ErrForeignURL, ref, c.name)
	}
	// Credentials come from netrc only, and fragments are never sent.
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// NAR starts a GET of u (normally from ResolveNAR) and returns the body as
// it streams in, with its size from Content-Length or -1. It fails with
// ErrNotFound on 404/403/410 and ErrUnavailable on other statuses, on
// network errors and when no headers arrive within the client's Timeout.
//
// The body is the raw bytes on the wire (no transparent decompression). A
// Read that waits longer than StallTimeout fails with an error wrapping
// ErrUnavailable and cancels the request; so does a Read on a broken or
// truncated transfer. Cancelling ctx aborts the transfer too. The caller
// must Close the body.
func (c *Client) NAR(ctx context.Context, u *url.URL) (body io.ReadCloser, size int64, err error) {
	if u == nil {
		return nil, -1, fmt.Errorf("upstream %s: nil NAR URL", c.name)
	}
	t, err := c.begin(false)
	if err != nil {
		return nil, -1, err
	}
	start := time.Now()
	defer func() {
		// The breaker judges the upstream by its headers: a NAR's body
		// may take minutes. A body's outcome is reported to the Observer
		// when it ends (see stallBody).
		c.end(ctx, t, err)
		if err != nil {
			c.observe(ctx, "nar", start, err)
		}
	}()
	reqCtx, cancel := context.WithCancelCause(ctx)
	// Timeout bounds only the wait for headers here (retries included): a
	// large NAR may legitimately take far longer, which the stall timer
	// polices instead.
	headers := time.AfterFunc(c.timeout, func() { cancel(errTimeout) })
	resp, err := c.do(ctx, reqCtx, u, start.Add(c.timeout))
	fired := !headers.Stop()
	if err != nil {
		cancel(nil)
		return nil, -1, err
	}
	if fired {
		// The headers won the race against the timer, but the request is
		// already cancelled, so the body is useless.
		resp.Body.Close()
		defer cancel(nil)
		return nil, -1, c.requestError(ctx, reqCtx, context.Cause(reqCtx))
	}
	return newStallBody(c, ctx, reqCtx, cancel, resp.Body, time.Since(start)), resp.ContentLength, nil
}
