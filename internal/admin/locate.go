package admin

import (
	"context"
	"errors"

	"golang.org/x/sync/errgroup"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// LocateRequest asks where store paths come from.
type LocateRequest struct {
	Paths []string `json:"paths"`
}

// LocateResult answers a LocateRequest, one answer per path in order.
type LocateResult struct {
	Paths []warm.PathState `json:"paths"`
}

// MaxLocate bounds the paths one locate request asks about.
const MaxLocate = 5000

// locateConcurrency bounds the lookups one locate request runs at once.
const locateConcurrency = 16

// Locate says of each path whether the cache holds it (narinfo and NAR),
// an upstream has it (the cache fetches it on demand), or nobody does,
// with the references of those that are there. Upstream answers are
// stored or remembered as for a client's lookup, so asking again is cheap.
func (s *Service) Locate(ctx context.Context, req LocateRequest) (LocateResult, error) {
	if len(req.Paths) == 0 {
		return LocateResult{}, badRequestf("no paths given")
	}
	if len(req.Paths) > MaxLocate {
		return LocateResult{}, badRequestf("%d paths: at most %d in one request", len(req.Paths), MaxLocate)
	}
	hashes := make([]string, len(req.Paths))
	for i, p := range req.Paths {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return LocateResult{}, badRequest(err)
		}
		hashes[i] = h
	}
	res := LocateResult{Paths: make([]warm.PathState, len(req.Paths))}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(locateConcurrency)
	for i := range req.Paths {
		g.Go(func() error {
			st, err := s.locateOne(ctx, hashes[i])
			st.Path = req.Paths[i]
			res.Paths[i] = st
			return err
		})
	}
	return res, g.Wait()
}

func (s *Service) locateOne(ctx context.Context, hash string) (warm.PathState, error) {
	var st warm.PathState
	e, err := s.cache.Find(ctx, hash)
	switch {
	case errors.Is(err, cache.ErrNotFound):
		st.Where = warm.Missing
		return st, nil
	case ctx.Err() != nil:
		return st, ctx.Err()
	case err != nil:
		st.Where, st.Error = warm.Unknown, err.Error()
		return st, nil
	}
	st.Where = warm.Upstream
	if ok, err := s.cache.HasNAR(ctx, e.NARName); err != nil {
		return st, err
	} else if ok {
		st.Where = warm.Cached
	}
	for _, r := range e.Info.References {
		if r != "" {
			st.References = append(st.References, warm.FullPath(r))
		}
	}
	return st, nil
}
