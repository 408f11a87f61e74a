package main

import (
	"context"
	"log/slog"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// follow starts following the [[warm]] flakes' locks in the background
// (one evaluation at a time, off every request's path) and returns what
// stops it.
func (s *stack) follow(watches []warm.Watch, log *slog.Logger) (stop func()) {
	if len(watches) == 0 {
		return func() {}
	}
	f := warm.NewFollower(warm.FollowOptions{
		Watches: watches,
		Locate: func(ctx context.Context, paths []string) ([]warm.PathState, error) {
			res, err := s.admin.Locate(ctx, admin.LocateRequest{Paths: paths})
			return res.Paths, err
		},
		Warm: func(ctx context.Context, r warm.Report, keep int) error {
			_, err := s.admin.Warm(ctx, admin.WarmRequest{Report: r, Keep: keep})
			return err
		},
		Board:  s.warms,
		Logger: log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	log.Info("following flakes", "flakes", len(watches))
	return func() { cancel(); <-done }
}
