package cache

import (
	"context"
	"sync"
	"time"
)

// activity tracks the client work in progress (NAR responses and
// downloads) so that background work that competes with it for CPU, the
// recompression, can wait for a pause. A client unpacking a NAR it is
// being sent runs on the same CPUs when proxy and client share a machine,
// and on a small box serving a LAN the transcode would slow the sendfile
// loop: the first clients must not pay for the later ones' zstd.
type activity struct {
	mu      sync.Mutex
	active  int
	last    time.Time     // when the last one ended
	changed chan struct{} // closed and replaced when active drops to 0
}

func newActivity() *activity {
	return &activity{changed: make(chan struct{})}
}

// begin counts one piece of client work in until the returned end is
// called (once).
func (a *activity) begin() (end func()) {
	a.mu.Lock()
	a.active++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.active--
			a.last = time.Now()
			if a.active == 0 {
				close(a.changed)
				a.changed = make(chan struct{})
			}
		})
	}
}

// waitIdle returns once no client work has been in progress for quiet,
// or at deadline whatever the clients do (background work is deferred,
// never starved), or with ctx's error.
func (a *activity) waitIdle(ctx context.Context, quiet time.Duration, deadline time.Time) error {
	for {
		a.mu.Lock()
		active, last, changed := a.active, a.last, a.changed
		a.mu.Unlock()
		now := time.Now()
		if !now.Before(deadline) {
			return ctx.Err()
		}
		wait := deadline.Sub(now)
		switch {
		case active > 0:
			// Until the last one ends (changed) or the deadline.
		case now.Sub(last) >= quiet:
			return ctx.Err()
		default:
			wait = min(wait, last.Add(quiet).Sub(now))
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
