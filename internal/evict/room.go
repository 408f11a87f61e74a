package evict

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// diskRetry is how long after a failed write to the disk NARs are streamed
// without being kept before keeping is tried again.
const diskRetry = 30 * time.Second

// roomWait bounds how long a download waits for eviction to make room
// before it streams without keeping.
const roomWait = 30 * time.Second

// reservation is room held for one download; done releases it.
type reservation struct {
	e    *Evictor
	size int64
	done bool
}

// Reserve holds size bytes (FileSize, else an upper bound such as NarSize;
// 0 when nothing is known) for a download that is to be kept, evicting
// first (in the background pass) if that would pass a bound. It returns an
// error wrapping ErrNoRoom when the NAR cannot be kept: then stream it
// without keeping. Otherwise call grow with the bytes known to land
// whenever that passes size (it never waits: it asks for a pass at once
// if the bound is passed), and release once the download ends, with the
// error writing it to disk failed with (nil if it did not, also when it
// failed for another reason): a write failure stops keeping NARs for a
// while; a NAR kept ends that.
func (e *Evictor) Reserve(ctx context.Context, size int64) (grow func(total int64), release func(kept bool, writeErr error), err error) {
	r, err := e.reserve(ctx, size)
	if err != nil {
		return nil, nil, err
	}
	return r.grow, r.release, nil
}

func (e *Evictor) reserve(ctx context.Context, size int64) (*reservation, error) {
	if err := e.diskFailing(); err != nil {
		return nil, fmt.Errorf("%w: writes to the cache dir are failing: %w", ErrNoRoom, err)
	}
	if max := e.cfg.MaxSize; max > 0 && size > lowWater(max)-e.st.IndexSize() {
		return nil, fmt.Errorf("%w: %d bytes is more than the --max-size bound allows", ErrNoRoom, size)
	}
	e.mu.Lock()
	e.reserved += size
	e.mu.Unlock()
	r := &reservation{e: e, size: size}
	deadline := time.Now().Add(roomWait)
	for {
		u, err := e.usage(ctx)
		if err != nil {
			r.release(false, nil)
			return nil, err
		}
		if u.NeedSize <= 0 && u.NeedSpace <= 0 || size == 0 {
			return r, nil
		}
		// Over the high watermark with this download counted: the pass
		// that fires now evicts down to the low one.
		over := u.MaxSize > 0 && u.NARBytes+u.Index+u.Reserved > u.MaxSize ||
			u.Free >= 0 && u.Free-u.Reserved < u.MinFree
		if !over {
			return r, nil
		}
		// Only a pass that starts after this point sees this reservation:
		// wait for one to end (passes run one at a time, in order).
		e.passMu.Lock()
		want := e.started + 1
		e.passMu.Unlock()
		e.Kick()
		e.roomWaiters.Add(1)
		err = e.waitPass(ctx, want, deadline)
		e.roomWaiters.Add(-1)
		if err != nil {
			r.release(false, nil)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: eviction could not make room for %d bytes in %s", ErrNoRoom, size, roomWait)
		}
		// One pass frees all it can: if it did not make room, the rest is
		// pinned or kept.
		if u2, err := e.usage(ctx); err == nil && (u2.MaxSize > 0 && u2.NARBytes+u2.Index+u2.Reserved > u2.MaxSize ||
			u2.Free >= 0 && u2.Free-u2.Reserved < u2.MinFree) {
			r.release(false, nil)
			return nil, fmt.Errorf("%w: eviction cannot make room for %d bytes: the rest is pinned or kept", ErrNoRoom, size)
		}
	}
}

// waitPass waits until pass number want (counted from 1) has ended.
func (e *Evictor) waitPass(ctx context.Context, want uint64, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		e.passMu.Lock()
		done, passed := e.passes, e.passed
		e.passMu.Unlock()
		if done >= want {
			return nil
		}
		select {
		case <-passed:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errors.New("timed out")
		}
	}
}

// grow raises the bytes r holds to total, when the download turned out
// larger than reserved. A download is never held up for it: if that
// passes a bound, the pass kicked now evicts for it.
func (r *reservation) grow(total int64) {
	e := r.e
	e.mu.Lock()
	if r.done || total <= r.size {
		e.mu.Unlock()
		return
	}
	e.reserved += total - r.size
	r.size = total
	e.mu.Unlock()
	if u, err := e.usage(context.Background()); err == nil && (u.NeedSize > 0 || u.NeedSpace > 0) {
		e.Kick()
	}
}

func (r *reservation) release(kept bool, writeErr error) {
	e := r.e
	e.mu.Lock()
	if r.done {
		e.mu.Unlock()
		return
	}
	r.done = true
	e.reserved -= r.size
	if kept {
		e.diskErr = nil
	}
	e.mu.Unlock()
	if writeErr != nil {
		e.WriteFailed(writeErr)
	}
}

// WriteFailed records that writing a NAR to disk failed (ENOSPC, EIO):
// for diskRetry, NARs are streamed without being kept; eviction runs now.
func (e *Evictor) WriteFailed(err error) {
	e.mu.Lock()
	e.diskErr, e.diskAt = err, time.Now()
	e.mu.Unlock()
	e.log.Warn("writing a NAR to the cache dir failed; streaming without keeping", "retry_in", diskRetry, "err", err)
	e.Kick()
}

// ForgetDiskError ends a write-failure spell now, as if its retry wait
// had passed and the disk had room: for tests and the gc command.
func (e *Evictor) ForgetDiskError() {
	e.mu.Lock()
	e.diskErr = nil
	e.mu.Unlock()
}

func (e *Evictor) diskFailing() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.diskErr != nil && time.Since(e.diskAt) < diskRetry {
		return e.diskErr
	}
	return nil
}

// checkDisk ends a write-failure spell once the disk has room again.
func (e *Evictor) checkDisk(u usage) {
	if u.Free < 0 || u.Free-u.Reserved < u.MinFree {
		return
	}
	e.mu.Lock()
	if e.diskErr != nil && time.Since(e.diskAt) >= diskRetry {
		e.diskErr = nil
	}
	e.mu.Unlock()
}

// Ready reports whether NARs are being kept: an error while writes to the
// cache dir are failing, for /readyz.
func (e *Evictor) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.diskErr != nil {
		return fmt.Errorf("writing NARs to the cache dir failed %s ago (%v); streaming them without keeping",
			time.Since(e.diskAt).Round(time.Second), e.diskErr)
	}
	return nil
}
