package admin

import (
	"context"
	"errors"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
)

// CheckRequest asks whether paths are cached.
type CheckRequest struct {
	Paths   []string `json:"paths"`
	Closure bool     `json:"closure"`
	// Upstream asks the upstreams instead of the local cache.
	Upstream bool `json:"upstream"`
}

// PathCheck is the answer for one path.
type PathCheck struct {
	Path     string `json:"path"`               // the store path, or the hash when unknown
	NarInfo  bool   `json:"narinfo"`            // narinfo cached (or, with Upstream, offered upstream)
	NAR      bool   `json:"nar"`                // NAR file cached (with Upstream: same as NarInfo)
	Upstream string `json:"upstream,omitempty"` // with Upstream: which upstream has it
	Error    string `json:"error,omitempty"`    // why it could not be checked
}

// CheckResult answers a CheckRequest; OK is true iff every path is present.
type CheckResult struct {
	OK    bool        `json:"ok"`
	Paths []PathCheck `json:"paths"`
}

// Check reports which paths (and closures) are in the local cache, or with
// Upstream whether an upstream offers them with a trusted signature.
func (s *Service) Check(ctx context.Context, req CheckRequest) (CheckResult, error) {
	if len(req.Paths) == 0 {
		return CheckResult{}, badRequestf("no paths given")
	}
	var queue []string
	for _, p := range req.Paths {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return CheckResult{}, badRequest(err)
		}
		queue = append(queue, h)
	}
	res := CheckResult{OK: true}
	seen := make(map[string]bool)
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if seen[h] {
			continue
		}
		seen[h] = true
		pc, refs, err := s.checkOne(ctx, h, req.Upstream)
		if err != nil {
			return CheckResult{}, err
		}
		res.Paths = append(res.Paths, pc)
		res.OK = res.OK && pc.NarInfo && pc.NAR
		if req.Closure {
			for _, r := range refs {
				if rh := narinfo.HashOfStorePath(r); rh != "" {
					queue = append(queue, rh)
				}
			}
		}
	}
	return res, nil
}

func (s *Service) checkOne(ctx context.Context, hash string, upstream bool) (PathCheck, []string, error) {
	pc := PathCheck{Path: hash}
	if upstream {
		up, ni, err := s.cache.AskUpstreams(ctx, hash)
		switch {
		case err == nil:
			pc.Path, pc.NarInfo, pc.NAR, pc.Upstream = ni.StorePath, true, true, up
			return pc, ni.References, nil
		case errors.Is(err, cache.ErrNotFound):
			return pc, nil, nil
		case ctx.Err() != nil:
			return pc, nil, ctx.Err()
		default:
			pc.Error = err.Error()
			return pc, nil, nil
		}
	}
	e, err := s.cache.LocalEntry(ctx, hash)
	if errors.Is(err, cache.ErrNotFound) {
		return pc, nil, nil
	}
	if err != nil {
		return pc, nil, err
	}
	pc.Path, pc.NarInfo = e.Info.StorePath, true
	if pc.NAR, err = s.cache.HasNAR(ctx, e.NARName); err != nil {
		return pc, nil, err
	}
	return pc, e.Info.References, nil
}
