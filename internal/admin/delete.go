package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// DeleteRequest asks to remove paths from the cache: narinfo and NAR.
type DeleteRequest struct {
	Paths []string `json:"paths"`
	// Closure also removes what the paths reference that nothing else
	// cached needs: no other cached path references it, it is not pinned
	// nor a variant --keep-latest keeps.
	Closure bool `json:"closure"`
}

// DeleteResult lists the paths removed, referrers first.
type DeleteResult struct {
	Deleted []store.Deleted `json:"deleted"`
	Bytes   int64           `json:"bytes"`
}

// Delete removes paths from the index and the disk, narinfo with NAR (see
// store.DeletePath). A client that still holds one's narinfo gets 404 for
// it (an uploaded path is gone for good; one from an upstream is fetched
// again when asked for). It refuses, changing nothing, a path that is
// pinned (unpin it first), not cached, or referenced by a cached path that
// stays: Nix fails a path whose reference is missing.
func (s *Service) Delete(ctx context.Context, req DeleteRequest) (DeleteResult, error) {
	res := DeleteResult{Deleted: []store.Deleted{}}
	if len(req.Paths) == 0 {
		return res, badRequestf("no paths given")
	}
	names := map[string]string{} // hash -> as given
	var order []string           // referrers before what they reference
	for _, p := range req.Paths {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return res, badRequest(err)
		}
		if _, dup := names[h]; !dup {
			names[h] = p
			order = append(order, h)
		}
	}
	pinned, err := s.pinned(ctx)
	if err != nil {
		return res, err
	}
	refs := map[string][]string{}
	for _, h := range order {
		if pinned[h] {
			return res, conflict(fmt.Errorf("%s is pinned: unpin it first (nix-cache-proxy unpin %s)", names[h], names[h]))
		}
		r, err := s.references(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			return res, notFoundf("%s is not in the cache", names[h])
		}
		if err != nil {
			return res, err
		}
		refs[h] = r
	}
	// Candidates: the closure, read through the stored narinfos.
	candidates := map[string]bool{}
	if req.Closure {
		queue := append([]string(nil), order...)
		for len(queue) > 0 {
			h := queue[0]
			queue = queue[1:]
			for _, r := range refs[h] {
				if candidates[r] || names[r] != "" {
					continue
				}
				rr, err := s.references(ctx, r)
				if errors.Is(err, store.ErrNotFound) {
					continue // not cached: nothing to delete
				}
				if err != nil {
					return res, err
				}
				candidates[r], refs[r] = true, rr
				queue = append(queue, r)
			}
		}
	}
	referrers, err := s.referrers(ctx, names, candidates)
	if err != nil {
		return res, err
	}
	gone := map[string]bool{}
	for _, h := range order {
		gone[h] = true
	}
	for _, h := range order {
		if by := staying(referrers[h], gone); len(by) > 0 {
			return res, conflict(fmt.Errorf("%s is referenced by %s%s, which stay: Nix fails a path whose reference is missing; delete them first, or with it",
				names[h], s.storePaths(ctx, by[:min(3, len(by))]), more(len(by)-3)))
		}
	}
	if err := s.orphans(ctx, &order, refs, candidates, referrers, pinned, gone); err != nil {
		return res, err
	}
	for _, h := range order {
		d, err := s.store.DeletePath(ctx, h)
		if errors.Is(err, store.ErrPinned) || errors.Is(err, store.ErrBusy) {
			err = conflict(err)
		}
		if err != nil {
			return res, fmt.Errorf("delete %s (after deleting %d path(s)): %w", h, len(res.Deleted), err)
		}
		res.Deleted = append(res.Deleted, d)
		res.Bytes += d.Bytes
	}
	return res, nil
}

// orphans appends to *order, referrers first, the candidates whose every
// referrer goes: not pinned, not a kept variant.
func (s *Service) orphans(ctx context.Context, order *[]string, refs map[string][]string, candidates map[string]bool, referrers map[string][]string, pinned, gone map[string]bool) error {
	if len(candidates) == 0 {
		return nil
	}
	kept := map[string]bool{}
	if s.gc != nil {
		vs, err := s.gc.Kept(ctx)
		if err != nil {
			return err
		}
		for _, v := range vs {
			kept[v.Hash] = true
		}
	}
	for i := 0; i < len(*order); i++ {
		for _, r := range refs[(*order)[i]] {
			if !candidates[r] || gone[r] || pinned[r] || kept[r] || len(staying(referrers[r], gone)) > 0 {
				continue
			}
			gone[r] = true
			*order = append(*order, r)
		}
	}
	return nil
}

// staying lists the referrers not in gone.
func staying(by []string, gone map[string]bool) []string {
	var out []string
	for _, h := range by {
		if !gone[h] {
			out = append(out, h)
		}
	}
	return out
}

func more(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more)", n)
}

// storePaths names hashes by their store paths, for people.
func (s *Service) storePaths(ctx context.Context, hashes []string) string {
	out := make([]string, len(hashes))
	for i, h := range hashes {
		out[i] = h
		if text, err := s.store.ReadNarInfo(ctx, h); err == nil {
			if ni, err := narinfo.Parse(text); err == nil {
				out[i] = ni.StorePath
			}
		}
	}
	return strings.Join(out, ", ")
}

// pinned is the set of pinned hashes.
func (s *Service) pinned(ctx context.Context) (map[string]bool, error) {
	pins, err := s.store.Pins(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range pins {
		out[p.Hash] = true
	}
	return out, nil
}

// references are the hashes a stored narinfo references, itself left out.
func (s *Service) references(ctx context.Context, hash string) ([]string, error) {
	text, err := s.store.ReadNarInfo(ctx, hash)
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("stored narinfo %s: %w", hash, err)
	}
	var out []string
	for _, r := range ni.References {
		if h := narinfo.HashOfStorePath(r); h != "" && h != hash {
			out = append(out, h)
		}
	}
	return out, nil
}

// referrers walks every stored narinfo once and returns, for each of the
// paths named and the candidates, the store paths of those that reference
// it (hashes for the named and candidates themselves, so they compare).
func (s *Service) referrers(ctx context.Context, names map[string]string, candidates map[string]bool) (map[string][]string, error) {
	out := map[string][]string{}
	err := s.store.WalkNarInfoUse(ctx, time.Time{}, func(u *store.NarInfoUse) error {
		for _, r := range u.Refs {
			if names[r] != "" || candidates[r] {
				out[r] = append(out[r], strings.Clone(u.Hash))
			}
		}
		return nil
	})
	return out, err
}

// Delete asks the server to remove paths.
func (c *Client) Delete(ctx context.Context, req DeleteRequest) (DeleteResult, error) {
	var out DeleteResult
	return out, c.call(ctx, http.MethodPost, "/delete", req, &out)
}

func (h *handler) delete(r *http.Request) (any, error) {
	var req DeleteRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Delete(r.Context(), req)
}
