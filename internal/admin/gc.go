package admin

import (
	"context"
	"net/http"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
)

// Collector runs eviction on demand; *evict.Evictor is one.
type Collector interface {
	// Collect evicts what the bound needs and the variants --keep-latest
	// no longer keeps; dryRun chooses the same and evicts nothing.
	Collect(ctx context.Context, dryRun bool) (evict.Report, error)
	// Kept lists the variants --keep-latest keeps.
	Kept(ctx context.Context) ([]evict.Variant, error)
}

var _ Collector = (*evict.Evictor)(nil)

// GCRequest asks for an eviction pass now.
type GCRequest struct {
	DryRun bool `json:"dry_run"`
}

// GC runs eviction now and reports what it freed, or would free.
func (s *Service) GC(ctx context.Context, req GCRequest) (evict.Report, error) {
	if s.gc == nil {
		return evict.Report{}, badRequestf("this server runs no eviction")
	}
	return s.gc.Collect(ctx, req.DryRun)
}

// Kept lists the variants --keep-latest keeps, never nil.
func (s *Service) Kept(ctx context.Context) ([]evict.Variant, error) {
	if s.gc == nil {
		return []evict.Variant{}, nil
	}
	return s.gc.Kept(ctx)
}

// GC asks the server to run eviction now.
func (c *Client) GC(ctx context.Context, req GCRequest) (evict.Report, error) {
	var out evict.Report
	return out, c.call(ctx, http.MethodPost, "/gc", req, &out)
}

// Kept lists the variants --keep-latest keeps.
func (c *Client) Kept(ctx context.Context) ([]evict.Variant, error) {
	var out []evict.Variant
	return out, c.call(ctx, http.MethodGet, "/kept", nil, &out)
}

func (h *handler) gc(r *http.Request) (any, error) {
	var req GCRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return nil, err
		}
	}
	return h.svc.GC(r.Context(), req)
}
