package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	p, err := c.FetchNAR(ctx, u, 0, -1)
	return p.Body, p.Size, err
}

// NARPart is an upstream's answer to a NAR GET, whole or ranged.
type NARPart struct {
	// Body streams the bytes from Offset on; the caller must Close it.
	Body   io.ReadCloser
	Offset int64
	// Size is the whole NAR's: a 200's Content-Length or a 206's
	// Content-Range total; -1 when unknown.
	Size int64
	// Ranges reports that the upstream said Accept-Ranges: bytes.
	Ranges bool
	// URL is where the answer came from, after redirects: ask ranges of
	// it rather than redirecting once per range.
	URL *url.URL
	// End is where Body ends in the NAR (exclusive); -1 when unknown.
	End int64
	// Ranged reports that the answer is the 206 of a range.
	Ranged bool
}

// FetchNAR is NAR for the bytes of u from off up to end (exclusive; -1 for
// the end of the NAR). A ranged request (off > 0 or end >= 0) must be
// answered with exactly that range: a 200 (the upstream ignored Range) or
// a 206 with another Content-Range fails with ErrRangeRefused, before any
// byte of its body is read. A range from 0 may be answered with the whole
// NAR (a 200): that is no refusal, only a NARPart from 0 to the end.
func (c *Client) FetchNAR(ctx context.Context, u *url.URL, off, end int64) (p NARPart, err error) {
	p.Size = -1
	if u == nil {
		return p, fmt.Errorf("upstream %s: nil NAR URL", c.name)
	}
	t, err := c.begin(false)
	if err != nil {
		return p, err
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
	ranged := off > 0 || end >= 0
	rng := ""
	if ranged {
		last := ""
		if end >= 0 {
			last = strconv.FormatInt(end-1, 10)
		}
		rng = "bytes=" + strconv.FormatInt(off, 10) + "-" + last
	}
	resp, err := c.do(ctx, reqCtx, u, start.Add(c.timeout), rng)
	fired := !headers.Stop()
	if err != nil {
		cancel(nil)
		return p, err
	}
	if fired {
		// The headers won the race against the timer, but the request is
		// already cancelled, so the body is useless.
		resp.Body.Close()
		defer cancel(nil)
		return p, c.requestError(ctx, reqCtx, context.Cause(reqCtx))
	}
	whole := resp.StatusCode == http.StatusOK && (!ranged || off == 0)
	if ranged && resp.StatusCode == http.StatusPartialContent || whole {
		p.Size, p.End = resp.ContentLength, resp.ContentLength
		if !whole {
			p.Size, err = checkContentRange(resp.Header.Get("Content-Range"), off, end)
			p.End, p.Ranged = end, true
			if end < 0 {
				p.End = p.Size
			}
		}
	} else {
		err = &failure{c.name, "answered a ranged GET with " + resp.Status, ErrRangeRefused, nil}
	}
	if err != nil {
		if !errors.Is(err, ErrRangeRefused) {
			drain(resp.Body)
		}
		resp.Body.Close()
		cancel(nil)
		var f *failure
		if errors.Is(err, ErrRangeRefused) && !errors.As(err, &f) {
			err = &failure{c.name, err.Error(), ErrRangeRefused, nil}
		}
		return p, err
	}
	p.Body = newStallBody(c, ctx, reqCtx, cancel, resp.Body, time.Since(start))
	p.Offset = off
	p.Ranges = resp.Header.Get("Accept-Ranges") == "bytes"
	p.URL = resp.Request.URL
	return p, nil
}

// checkContentRange checks that a 206's Content-Range is the range asked
// for (off up to end, exclusive; end -1 for the end), and returns the NAR's
// total size from it (-1 for "*").
func checkContentRange(cr string, off, end int64) (int64, error) {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	first, rest, ok2 := strings.Cut(spec, "-")
	last, total, ok3 := strings.Cut(rest, "/")
	if !ok || !ok2 || !ok3 {
		return -1, fmt.Errorf("%w: Content-Range %q", ErrRangeRefused, cr)
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	size := int64(-1)
	var err3 error
	if total != "*" {
		size, err3 = strconv.ParseInt(total, 10, 64)
	}
	switch {
	case err1 != nil || err2 != nil || err3 != nil || a != off || b < a:
		return -1, fmt.Errorf("%w: Content-Range %q for bytes %d-", ErrRangeRefused, cr, off)
	case end >= 0 && b != end-1, end < 0 && size >= 0 && b != size-1:
		return -1, fmt.Errorf("%w: Content-Range %q does not end where asked", ErrRangeRefused, cr)
	case size >= 0 && b >= size:
		return -1, fmt.Errorf("%w: Content-Range %q past its total", ErrRangeRefused, cr)
	}
	return size, nil
}
