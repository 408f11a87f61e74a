package upstream

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// Retry waits: the first retry comes after about retryBase, each next one
// after twice as long; a Retry-After longer than maxRetryAfter is not
// waited for (the request fails instead).
const (
	retryBase     = 100 * time.Millisecond
	maxRetryAfter = 5 * time.Second
)

// do sends a GET of u and returns the response if its status is 200. A
// failure a second try may fix is retried, up to c.attempts sends in all,
// as long as the wait ends before deadline and ctx is not done. Errors are
// in our vocabulary: parent is the caller's context, ctx the request's,
// whose cause names our own timers (see requestError).
func (c *Client) do(parent, ctx context.Context, u *url.URL, deadline time.Time, rng string) (*http.Response, error) {
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d // the caller's
	}
	for attempt := 1; ; attempt++ {
		req, err := c.newRequest(ctx, u)
		if err != nil {
			return nil, err
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := c.hc.Do(req)
		var wait time.Duration
		retry := false
		switch {
		case err != nil:
			retry = retryableError(err) && ctx.Err() == nil
			err = c.requestError(parent, ctx, err)
		default:
			if rng != "" && resp.StatusCode == http.StatusPartialContent {
				return resp, nil // checked by the caller
			}
			if err = c.statusError(resp); err == nil {
				if err = c.htmlError(resp); err == nil {
					return resp, nil
				}
			}
			retry, wait = retryableStatus(resp, time.Now())
			drain(resp.Body)
			resp.Body.Close()
		}
		if !retry || attempt >= c.attempts {
			return nil, err
		}
		// Jitter keeps many clients retrying one upstream from marching
		// in step.
		backoff := retryBase << (attempt - 1)
		wait = max(wait, backoff/2+rand.N(backoff/2+1))
		if time.Now().Add(wait).After(deadline) {
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, c.requestError(parent, ctx, ctx.Err())
		case <-t.C:
		}
	}
}

// retryableError reports whether a failed send may succeed if repeated at
// once: the connection was reset or closed under us. Timeouts, refused
// connections, DNS and TLS failures are not: they say the upstream is
// down, which is the breaker's business.
func retryableError(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// retryableStatus reports whether a status is worth another try, and how
// long the upstream asked us to wait first (Retry-After: seconds or an
// HTTP date). A wait beyond maxRetryAfter means no retry.
func retryableStatus(resp *http.Response, now time.Time) (bool, time.Duration) {
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, http.StatusTooManyRequests:
	default:
		return false, 0
	}
	wait := retryAfter(resp.Header.Get("Retry-After"), now)
	if wait > maxRetryAfter {
		return false, 0
	}
	return true, wait
}

// retryAfter parses a Retry-After value; 0 when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}
