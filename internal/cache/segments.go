package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// rangeFetch lands one NAR from its upstream in a part file, over one or
// several connections. The NAR is cut into segments, one per connection;
// each connection writes its segment in order at its offsets. Followers
// and the hash see only the contiguous prefix, which grows as the segments
// complete in order.
//
// A connection that breaks or stalls is resumed from where it stopped with
// a Range request, after a back-off, up to retries times in a row without
// progress. A segment whose connection cannot get its range (the upstream
// ignores Range, answers another Content-Range, or keeps failing) is dead:
// the connection before it carries on through it when it gets there, so in
// the normal case no byte is fetched twice, and a refused range costs only
// the speed.
type rangeFetch struct {
	client   *upstream.Client
	orig     *url.URL // the NAR's URL: asked again on a resume, re-following redirects
	final    *url.URL // where the first answer came from: asked for the segments
	size     int64    // -1 when unknown (then one segment, to EOF)
	out      io.WriterAt
	retries  int
	backoff  time.Duration
	grew     func(prefix int64)      // called with mu held, as the prefix grows
	save     func(note []byte) error // saves a durable progress note; nil: not resumable
	mark     func(note []byte) error // saves one good until the machine restarts
	every    int64                   // fetched bytes between two notes
	notes    noter
	savedAt  int64 // fetched when the last durable note was saved
	markedAt int64 // fetched when the last note of either kind was saved

	mu      sync.Mutex
	changed *sync.Cond
	segs    []*segment
	prefix  int64
	fetched int64 // bytes received from the upstream, rewrites included
	err     error // the first fatal error
}

// segment is the bytes [start, end) of the NAR; end -1 means to EOF.
type segment struct {
	start, end int64
	done       int64 // bytes landed from start
	state      segState
	err        error // why it was given up
}

type segState int

const (
	segPending  segState = iota // its connection has not had an answer yet
	segLive                     // a connection is fetching it
	segDead                     // no connection has it: the one before carries on through
	segComplete                 // all its bytes have landed
)

// split cuts [0, size) into n segments of nearly equal length, the first
// already live (its connection is the first answer).
func split(size int64, n int) []*segment {
	segs := make([]*segment, n)
	for i := range n {
		segs[i] = &segment{start: size * int64(i) / int64(n), end: size * int64(i+1) / int64(n)}
	}
	segs[0].state = segLive
	return segs
}

// run fetches every segment, the first from first (the upstream's answer to
// the plain GET; nil to ask for its range like the others), and returns
// when all have landed or one cannot. A resumable fetch that fails saves
// its note for the next try.
func (f *rangeFetch) run(ctx context.Context, first *upstream.NARPart) (err error) {
	f.changed = sync.NewCond(&f.mu)
	f.notes.save, f.notes.mark, f.notes.every = f.save, f.mark, f.every
	if f.notes.every <= 0 {
		f.notes.every = 8 << 20
	}
	defer func() {
		f.notes.wg.Wait()
		if err != nil {
			f.saveNow()
		}
	}()
	f.mu.Lock()
	f.regrow() // what a previous try left: followers and the hash start there
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range f.segs {
		wg.Go(func() {
			var body *upstream.NARPart
			if i == 0 {
				body = first
			}
			if err := f.worker(ctx, i, body); err != nil {
				f.mu.Lock()
				if f.err == nil {
					f.err = err
				}
				f.changed.Broadcast()
				f.mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	if f.err != nil {
		return f.err
	}
	for _, s := range f.segs {
		if s.state != segComplete {
			return fmt.Errorf("bytes %d- of the NAR: %w", s.start+s.done, s.err)
		}
	}
	return nil
}

// claim reports whether the connection that finished segment i-1 takes
// over segment i: only when it is dead. It waits while i is pending.
func (f *rangeFetch) claim(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.segs[i].state == segPending && f.err == nil {
		f.changed.Wait()
	}
	if f.segs[i].state != segDead || f.err != nil {
		return false
	}
	f.segs[i].state = segLive
	return true
}

// setState moves segment i to st, waking claim.
func (f *rangeFetch) setState(i int, st segState) {
	f.mu.Lock()
	f.segs[i].state = st
	f.changed.Broadcast()
	f.mu.Unlock()
}

// landed records that bytes [off, off+n) of segment i are on disk, and
// grows the prefix.
func (f *rangeFetch) landed(i int, off int64, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.segs[i]
	s.done = max(s.done, off+int64(n)-s.start)
	f.fetched += int64(n)
	f.regrow()
	f.maybeSave()
}

// regrow moves the prefix to the end of the segments landed in order;
// f.mu must be held.
func (f *rangeFetch) regrow() {
	p := f.prefix
	for _, s := range f.segs {
		p = s.start + s.done
		if s.end < 0 || s.start+s.done < s.end {
			break
		}
	}
	if p > f.prefix {
		f.prefix = p
		f.grew(p)
	}
}

// pos is where segment i's next byte goes.
func (f *rangeFetch) pos(i int) (pos, end int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.segs[i].start + f.segs[i].done, f.segs[i].end
}

// Fetched returns the bytes received from the upstream so far.
func (f *rangeFetch) Fetched() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetched
}

// writeFailed is a write to the part file that failed (ENOSPC, EIO).
type writeFailed struct{ err error }

func (e *writeFailed) Error() string { return "write: " + e.err.Error() }
func (e *writeFailed) Unwrap() error { return e.err }

// giveUp marks segment i dead after err: the connection before it carries
// on through it, if it has not finished already. Segment 0 has none before
// it, so its failure is the fetch's.
func (f *rangeFetch) giveUp(i int, err error) error {
	if i == 0 {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.segs[i].state = segDead
	if f.segs[i].err == nil {
		f.segs[i].err = err
	}
	f.changed.Broadcast()
	return nil
}

// wait sleeps the back-off before the n-th attempt in a row (n >= 1).
func (f *rangeFetch) wait(ctx context.Context, n int) error {
	d := min(f.backoff<<(n-1), maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const maxBackoff = 30 * time.Second

// worker fetches segment i and then each dead segment after it, over one
// connection at a time. body is the answer to start from (the first GET,
// for segment 0), or nil to ask for the range.
func (f *rangeFetch) worker(ctx context.Context, i int, body *upstream.NARPart) error {
	var bodyPos, bodyEnd int64 // where body's next byte goes, and where it ends (-1: EOF)
	if body != nil {
		bodyPos, bodyEnd = body.Offset, body.End
		if bodyEnd < 0 {
			bodyEnd = f.size
		}
	}
	closeBody := func() {
		if body != nil {
			body.Body.Close()
			body = nil
		}
	}
	defer closeBody()
	buf := make([]byte, hashBufferSize)
	failures := 0
	fail := func(err error) error {
		closeBody()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		// A refused range is refused again: no use retrying it.
		if errors.Is(err, upstream.ErrRangeRefused) || failures > f.retries {
			return f.giveUp(i, err)
		}
		return f.wait(ctx, failures)
	}
	for {
		pos, end := f.pos(i)
		if end >= 0 && pos >= end {
			if body != nil && body.Offset == 0 && bodyPos == f.size {
				// A body without Content-Length must end where the
				// narinfo says it does.
				if k, _ := body.Body.Read(buf[:1]); k > 0 {
					return verifyFailed("size", "upstream sent more than %d bytes", f.size)
				}
			}
			f.setState(i, segComplete)
			if i+1 == len(f.segs) || !f.claim(i+1) {
				return nil
			}
			i++
			continue
		}
		if body != nil && bodyEnd >= 0 && bodyPos >= bodyEnd {
			closeBody()
		}
		if body == nil {
			u := f.final
			if failures > 0 {
				u = f.orig // a resume follows the redirect afresh: the last one may have expired
			}
			p, err := f.client.FetchNAR(ctx, u, pos, end)
			if err != nil {
				if err := fail(err); err != nil || f.dead(i) {
					return err
				}
				continue
			}
			body, bodyPos, bodyEnd = &p, pos, end
			if f.state(i) == segPending {
				f.setState(i, segLive)
			}
		}
		want := int64(len(buf))
		if end >= 0 {
			want = min(want, end-bodyPos)
		}
		k, rerr := body.Body.Read(buf[:want])
		if k > 0 {
			if _, err := f.out.WriteAt(buf[:k], bodyPos); err != nil {
				return &writeFailed{err}
			}
			f.landed(i, bodyPos, k)
			bodyPos += int64(k)
			failures = 0
		}
		switch {
		case rerr == io.EOF && end < 0:
			f.setState(i, segComplete) // a NAR of unknown size ends at EOF
			return nil
		case rerr == io.EOF && bodyEnd >= 0 && bodyPos >= bodyEnd:
			closeBody()
		case rerr == io.EOF:
			rerr = io.ErrUnexpectedEOF
			fallthrough
		case rerr != nil:
			if err := fail(rerr); err != nil || f.dead(i) {
				return err
			}
		}
	}
}

// dead reports whether segment i was given up.
func (f *rangeFetch) dead(i int) bool { return f.state(i) == segDead }

func (f *rangeFetch) state(i int) segState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.segs[i].state
}
