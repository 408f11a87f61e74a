package admin

import (
	"context"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// WarmRequest asks the proxy to warm one evaluated flake attribute: pin
// (and prefetch with their closures) its outputs and what a build of the
// missing ones would fetch, under the attribute's name and revision, and
// keep only its Keep newest revisions' pins.
type WarmRequest struct {
	warm.Report
	Keep int `json:"keep"` // default 3
}

// WarmResult answers a WarmRequest.
type WarmResult struct {
	Job      prefetch.Status `json:"job"`      // prefetching what is pinned
	Pinned   int             `json:"pinned"`   // paths pinned for this revision
	Unpinned []string        `json:"unpinned"` // pins older revisions alone needed, now dropped
	Missing  int             `json:"missing"`  // paths recorded in the miss log as nobody's
}

// MaxWarmPaths bounds the paths one warm pins.
const MaxWarmPaths = 10000

// MaxWarmMisses bounds the missing paths one warm records in the miss log:
// the outputs of the derivations with the largest closures (the
// attribute's own first). The watcher pulls each in with its closure
// when it appears upstream, so the top of the tree is what matters.
const MaxWarmMisses = 200

// DefaultKeep is how many revisions of each attribute warms keep pinned.
const DefaultKeep = 3

// Warm carries out a WarmRequest.
func (s *Service) Warm(ctx context.Context, req WarmRequest) (WarmResult, error) {
	target, rev := req.Target.String(), req.Lock.Revision()
	switch {
	case req.Target.Flake == "" || req.Target.Attr == "":
		return WarmResult{}, badRequestf("no target: want the flake and the attribute")
	case rev == "":
		return WarmResult{}, badRequestf("%s: no locked revision", target)
	case len(req.Roots) == 0:
		return WarmResult{}, badRequestf("%s: no outputs to warm", target)
	case len(req.Roots)+len(req.Fetch) > MaxWarmPaths:
		return WarmResult{}, badRequestf("%s: %d paths to pin, at most %d", target, len(req.Roots)+len(req.Fetch), MaxWarmPaths)
	case req.Keep < 0:
		return WarmResult{}, badRequestf("keep: want 1 or more, got %d", req.Keep)
	}
	if req.Keep == 0 {
		req.Keep = DefaultKeep
	}
	all := append(append([]string{}, req.Roots...), req.Fetch...)
	pins := make(map[string]string, len(all))
	for _, p := range all {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return WarmResult{}, badRequest(err)
		}
		pins[h] = p
	}
	now := time.Now()
	dropped, err := s.store.WarmPins(ctx, target, rev, pins, req.Keep, now)
	if err != nil {
		return WarmResult{}, err
	}
	res := WarmResult{Pinned: len(pins), Unpinned: []string{}}
	for _, p := range dropped {
		res.Unpinned = append(res.Unpinned, p.StorePath)
	}
	for _, p := range req.MissingPaths[:min(len(req.MissingPaths), MaxWarmMisses)] {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return res, badRequest(err)
		}
		s.misses.Record(store.MissEvent{Hash: h, At: now, Outcome: store.OutcomeNotFound, StorePath: p, Attr: target, Rev: rev})
		res.Missing++
	}
	if res.Job, err = s.prefetch.Start(prefetch.Request{Paths: all, Closure: true}); err != nil {
		return res, err
	}
	s.board.Warmed(req.Report, now)
	return res, nil
}

// WarmStatus lists the attributes warmed since the start.
func (s *Service) WarmStatus(ctx context.Context) ([]warm.Status, error) {
	return s.board.List(), nil
}
