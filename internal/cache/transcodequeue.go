package cache

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Background recompression runs one NAR at a time, and only while the
// clients pause: a NAR fetched for a client is queued at its commit, and
// the queue's one worker starts it, and reads each next chunk of the
// original, only once no NAR has been served or fetched for a quiet
// moment (activity.waitIdle). A closure copied NAR after NAR leaves no
// such moment until its last NAR is sent, so the first client is copied
// as fast as without recompression; the later ones get zstd. A job
// deferred for maxDefer runs whatever the clients do, so a busy proxy
// still recompresses.

// Defaults of Options.RecompressQuiet and RecompressMaxDefer.
const (
	defaultRecompressQuiet    = 2 * time.Second
	defaultRecompressMaxDefer = 10 * time.Minute
)

// gate is waited on before each read of an original being recompressed;
// nil for a recompression a client waits for.
type gate func(ctx context.Context) error

type transcodeJob struct {
	hash, orig string
	queued     time.Time
}

// transcodeQueue holds the recompressions waiting for their turn.
type transcodeQueue struct {
	mu      sync.Mutex
	jobs    []transcodeJob
	queued  map[string]bool // by original name
	running bool            // a worker is draining jobs
}

// enqueueTranscode queues the recompression of the stored NAR orig, named
// by hash's narinfo, starting the worker if none runs.
func (c *Cache) enqueueTranscode(hash, orig string) {
	q := &c.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued[orig] {
		return
	}
	if q.queued == nil {
		q.queued = make(map[string]bool)
	}
	q.jobs = append(q.jobs, transcodeJob{hash: hash, orig: orig, queued: time.Now()})
	q.queued[orig] = true
	if q.running || !c.detach() {
		return
	}
	q.running = true
	go c.transcodeWorker()
}

// next takes the oldest job, or reports that there is none left and the
// worker stops.
func (q *transcodeQueue) next() (transcodeJob, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.jobs) == 0 {
		q.running = false
		return transcodeJob{}, false
	}
	j := q.jobs[0]
	q.jobs = q.jobs[1:]
	delete(q.queued, j.orig)
	return j, true
}

// pending is how many recompressions wait for their turn.
func (q *transcodeQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs)
}

func (c *Cache) transcodeWorker() {
	defer c.wg.Done()
	for {
		j, ok := c.queue.next()
		if !ok {
			return
		}
		deadline := j.queued.Add(c.recompressMaxDefer)
		wait := func(ctx context.Context) error {
			return c.active.waitIdle(ctx, c.recompressQuiet, deadline)
		}
		if wait(c.ctx) != nil {
			continue // closing: drain without work
		}
		ctx, cancel := context.WithTimeout(c.ctx, transcodeTimeout)
		_, err := c.transcodeShared(ctx, j.hash, j.orig, wait)
		cancel()
		switch {
		case err == nil, c.ctx.Err() != nil:
		case errors.Is(err, store.ErrNotFound):
			// Evicted while it waited: the next fill queues it again.
			c.log.Info("recompress: original gone before its turn", "nar", j.orig)
		case errors.Is(err, errNoRoom):
			// Reserve waited for a pass already; the next fill of
			// this NAR (after it is evicted) queues it again.
			c.log.Info("recompress: no room for the zstd file, the NAR stays as it is", "nar", j.orig, "err", err)
		default:
			c.log.Warn("recompress", "nar", j.orig, "err", err)
		}
	}
}

// gatedReader waits on its gate before each read.
type gatedReader struct {
	ctx  context.Context
	r    io.Reader
	gate gate
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if err := g.gate(g.ctx); err != nil {
		return 0, err
	}
	return g.r.Read(p)
}
