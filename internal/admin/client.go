package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// Client calls the admin API of a running server. Its methods mirror
// Service's.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a Client for the server at base ("http://host:port").
func NewClient(base, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://host:port", base)
	}
	return &Client{base: strings.TrimSuffix(base, "/") + Prefix, token: token, hc: &http.Client{Timeout: time.Minute}}, nil
}

// Misses lists the miss log.
func (c *Client) Misses(ctx context.Context, f MissFilter) ([]store.Miss, error) {
	q := url.Values{}
	if f.Since > 0 {
		q.Set("since", f.Since.String())
	}
	if f.Outcome != "" {
		q.Set("outcome", f.Outcome)
	}
	var out []store.Miss
	return out, c.call(ctx, http.MethodGet, "/misses?"+q.Encode(), nil, &out)
}

// Prefetch starts a prefetch job.
func (c *Client) Prefetch(ctx context.Context, req PrefetchRequest) (prefetch.Status, error) {
	var out prefetch.Status
	return out, c.call(ctx, http.MethodPost, "/prefetch", req, &out)
}

// Job returns a prefetch job's status.
func (c *Client) Job(ctx context.Context, id string) (prefetch.Status, error) {
	var out prefetch.Status
	return out, c.call(ctx, http.MethodGet, "/prefetch/"+url.PathEscape(id), nil, &out)
}

// WaitJob returns a prefetch job's status once it has finished or after at
// most wait.
func (c *Client) WaitJob(ctx context.Context, id string, wait time.Duration) (prefetch.Status, error) {
	var out prefetch.Status
	return out, c.call(ctx, http.MethodGet, "/prefetch/"+url.PathEscape(id)+"?wait="+wait.String(), nil, &out)
}

// Jobs lists the prefetch jobs.
func (c *Client) Jobs(ctx context.Context) ([]prefetch.Status, error) {
	var out []prefetch.Status
	return out, c.call(ctx, http.MethodGet, "/prefetch", nil, &out)
}

// Pin pins paths and starts prefetching them.
func (c *Client) Pin(ctx context.Context, paths []string) (prefetch.Status, error) {
	var out prefetch.Status
	return out, c.call(ctx, http.MethodPost, "/pins", PathsRequest{Paths: paths}, &out)
}

// Unpin unpins paths.
func (c *Client) Unpin(ctx context.Context, paths []string) error {
	return c.call(ctx, http.MethodDelete, "/pins", PathsRequest{Paths: paths}, nil)
}

// Pins lists the pinned paths.
func (c *Client) Pins(ctx context.Context) ([]store.Pin, error) {
	var out []store.Pin
	return out, c.call(ctx, http.MethodGet, "/pins", nil, &out)
}

// Check reports which paths are cached.
func (c *Client) Check(ctx context.Context, req CheckRequest) (CheckResult, error) {
	var out CheckResult
	return out, c.call(ctx, http.MethodPost, "/check", req, &out)
}

// Locate says where each path comes from.
func (c *Client) Locate(ctx context.Context, req LocateRequest) (LocateResult, error) {
	var out LocateResult
	return out, c.call(ctx, http.MethodPost, "/locate", req, &out)
}

// Warm pins and prefetches an evaluated flake attribute.
func (c *Client) Warm(ctx context.Context, req WarmRequest) (WarmResult, error) {
	var out WarmResult
	return out, c.call(ctx, http.MethodPost, "/warm", req, &out)
}

// WarmStatus lists the attributes the server warmed since its start.
func (c *Client) WarmStatus(ctx context.Context) ([]warm.Status, error) {
	var out []warm.Status
	return out, c.call(ctx, http.MethodGet, "/warm", nil, &out)
}

// Verify starts a verify job.
func (c *Client) Verify(ctx context.Context, req verify.Request) (verify.Status, error) {
	var out verify.Status
	return out, c.call(ctx, http.MethodPost, "/verify", req, &out)
}

// WaitVerify returns a verify job's status with its problems from index
// from on, once it has one past from or has finished, or after at most wait.
func (c *Client) WaitVerify(ctx context.Context, id string, wait time.Duration, from int) (verify.Status, error) {
	var out verify.Status
	q := url.Values{"wait": {wait.String()}, "from": {strconv.Itoa(from)}}
	return out, c.call(ctx, http.MethodGet, "/verify/"+url.PathEscape(id)+"?"+q.Encode(), nil, &out)
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil || (method != http.MethodGet && method != http.MethodHead) {
		// The server refuses writes of any other type (see guard).
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %w", ErrNoServer, err)
	}
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		// The server's reason is the message: it speaks to the user.
		switch resp.StatusCode {
		case http.StatusBadRequest:
			return badRequest(errors.New(e.Error))
		case http.StatusNotFound:
			return notFound(errors.New(e.Error))
		case http.StatusConflict:
			return conflict(errors.New(e.Error))
		default:
			return fmt.Errorf("admin API: %s: %s", resp.Status, e.Error)
		}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API: decode %s: %w", path, err)
	}
	return nil
}
