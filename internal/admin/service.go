// Package admin is the operator's side of the proxy: the miss log, prefetch
// jobs, pins, cache checks and verify jobs, as a Service that works on an open cache, a
// JSON HTTP API for it under /_/, and a Client for that API. The CLI talks
// to a running server through Client, or, when none runs, to a Service of
// its own: both satisfy the same method set.
package admin

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// Store is what the Service needs of the store.
// Lists are never nil, so an empty one is [] in JSON, not null.
type Store interface {
	PutPin(ctx context.Context, p store.Pin) error
	DeletePin(ctx context.Context, hash string) error
	Pins(ctx context.Context) ([]store.Pin, error)
	WarmPins(ctx context.Context, attr, rev string, paths map[string]string, keep int, now time.Time) ([]store.Pin, error)
	// For delete (delete.go).
	ReadNarInfo(ctx context.Context, hash string) ([]byte, error)
	WalkNarInfoUse(ctx context.Context, cutoff time.Time, fn func(*store.NarInfoUse) error) error
	DeletePath(ctx context.Context, hash string) (store.Deleted, error)
}

// MissLog lists the miss log, most recently seen first, never nil.
// *misslog.Log does, with the rows not flushed yet: `misses` right after a
// miss shows it.
type MissLog interface {
	Misses(ctx context.Context) ([]store.Miss, error)
	Record(e store.MissEvent)
}

// Cache is what the Service needs of the cache.
type Cache interface {
	LocalEntry(ctx context.Context, hash string) (cache.Entry, error)
	HasNAR(ctx context.Context, name string) (bool, error)
	AskUpstreams(ctx context.Context, hash string) (string, *narinfo.Info, error)
	Find(ctx context.Context, hash string) (cache.Entry, error)
}

// Service carries out admin requests on an open cache.
type Service struct {
	store    Store
	misses   MissLog
	cache    Cache
	prefetch *prefetch.Manager
	gc       Collector
	verify   *verify.Manager
	board    *warm.Board
}

// NewService returns a Service; gc may be nil (no gc, nothing kept), and
// board too (warms are not shown).
func NewService(st Store, misses MissLog, c Cache, m *prefetch.Manager, gc Collector, v *verify.Manager, board *warm.Board) *Service {
	return &Service{store: st, misses: misses, cache: c, prefetch: m, gc: gc, verify: v, board: board}
}

// MissFilter selects miss log rows; zero values select everything.
type MissFilter struct {
	Since   time.Duration `json:"since,omitempty"`   // last seen within this long
	Outcome string        `json:"outcome,omitempty"` // one of store.Outcomes
}

// Misses lists the miss log, most recently seen first.
func (s *Service) Misses(ctx context.Context, f MissFilter) ([]store.Miss, error) {
	if f.Outcome != "" && !slices.Contains(store.Outcomes, f.Outcome) {
		return nil, badRequestf("outcome %q is not one of %s", f.Outcome, strings.Join(store.Outcomes, ", "))
	}
	all, err := s.misses.Misses(ctx)
	if err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-f.Since)
	all = slices.DeleteFunc(all, func(m store.Miss) bool {
		return (f.Outcome != "" && m.Outcome != f.Outcome) || (f.Since > 0 && m.LastSeen.Before(cutoff))
	})
	return all, nil
}

// PrefetchRequest asks for a prefetch job; Misses adds every path in the
// miss log to Paths.
type PrefetchRequest struct {
	prefetch.Request
	Misses bool `json:"misses"`
}

// Prefetch starts a prefetch job.
func (s *Service) Prefetch(ctx context.Context, req PrefetchRequest) (prefetch.Status, error) {
	if req.Misses {
		misses, err := s.misses.Misses(ctx)
		if err != nil {
			return prefetch.Status{}, err
		}
		for _, m := range misses {
			req.Paths = append(req.Paths, m.Hash)
		}
		if len(req.Paths) == 0 {
			return prefetch.Status{}, badRequestf("no paths given and the miss log is empty")
		}
	}
	st, err := s.prefetch.Start(req.Request)
	if errors.Is(err, prefetch.ErrBadPath) {
		err = badRequest(err)
	}
	return st, err
}

// Job returns a prefetch job's status.
func (s *Service) Job(ctx context.Context, id string) (prefetch.Status, error) {
	st, err := s.prefetch.Status(id)
	if errors.Is(err, prefetch.ErrNoJob) {
		err = notFoundf("no prefetch job %q", id)
	}
	return st, err
}

// WaitJob returns a prefetch job's status once it has finished or after
// at most wait, whichever is first.
func (s *Service) WaitJob(ctx context.Context, id string, wait time.Duration) (prefetch.Status, error) {
	st, err := s.prefetch.Wait(ctx, id, min(wait, maxWait))
	if errors.Is(err, prefetch.ErrNoJob) {
		err = notFoundf("no prefetch job %q", id)
	}
	return st, err
}

// maxWait bounds a long poll, well inside HTTP clients' timeouts.
const maxWait = 30 * time.Second

// Jobs lists the prefetch jobs, oldest first.
func (s *Service) Jobs(ctx context.Context) ([]prefetch.Status, error) {
	return s.prefetch.List(), nil
}

// Pin pins paths and starts prefetching them with their closures.
func (s *Service) Pin(ctx context.Context, paths []string) (prefetch.Status, error) {
	if len(paths) == 0 {
		return prefetch.Status{}, badRequestf("no paths given")
	}
	pins := make([]store.Pin, len(paths))
	for i, p := range paths {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return prefetch.Status{}, badRequest(err)
		}
		pins[i] = store.Pin{Hash: h, StorePath: p, Since: time.Now().UTC()}
	}
	for _, p := range pins {
		if err := s.store.PutPin(ctx, p); err != nil {
			return prefetch.Status{}, err
		}
	}
	return s.prefetch.Start(prefetch.Request{Paths: paths, Closure: true})
}

// Unpin unpins paths; a path that was not pinned is an error, reported
// after the others are unpinned.
func (s *Service) Unpin(ctx context.Context, paths []string) error {
	// Check every path first: a bad request changes nothing.
	hashes := make([]string, len(paths))
	for i, p := range paths {
		h, err := prefetch.HashOf(p)
		if err != nil {
			return badRequest(err)
		}
		hashes[i] = h
	}
	var errs []error
	for i, p := range paths {
		if err := s.store.DeletePin(ctx, hashes[i]); errors.Is(err, store.ErrNotFound) {
			errs = append(errs, notFoundf("%s is not pinned", p))
		} else if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// Pins lists the pinned paths.
func (s *Service) Pins(ctx context.Context) ([]store.Pin, error) {
	return s.store.Pins(ctx)
}
