package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// Verify starts a verify job (see package verify); one runs at a time.
func (s *Service) Verify(ctx context.Context, req verify.Request) (verify.Status, error) {
	st, err := s.verify.Start(req)
	if errors.Is(err, verify.ErrRunning) {
		err = conflict(fmt.Errorf("verify job %s is running; wait for it to end", st.ID))
	}
	return st, err
}

// WaitVerify returns a verify job's status, with its problems from index
// from on, as soon as it has one past from or has finished, or after at
// most wait.
func (s *Service) WaitVerify(ctx context.Context, id string, wait time.Duration, from int) (verify.Status, error) {
	st, err := s.verify.Wait(ctx, id, min(wait, maxWait), from)
	if errors.Is(err, verify.ErrNoJob) {
		err = notFound(err)
	}
	return st, err
}

// VerifyJobs lists the verify jobs kept, oldest first, without problems.
func (s *Service) VerifyJobs(ctx context.Context) ([]verify.Status, error) {
	return s.verify.List(), nil
}
