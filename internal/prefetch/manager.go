package prefetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"golang.org/x/sync/errgroup"
)

// Options configure a Manager. Zero values mean defaults.
type Options struct {
	// Concurrency bounds the NAR downloads a job runs at once; default 4.
	// Narinfo lookups run at four times that.
	Concurrency int
	// KeepFinished is how many finished jobs stay listed; default 100.
	KeepFinished int
	// Metrics count the bytes jobs bring in; nil keeps them unexported.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Manager runs prefetch jobs.
type Manager struct {
	metrics *metrics.Metrics
	cache   Cache
	conc    int
	keep    int
	log     *slog.Logger

	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu    sync.Mutex
	jobs  map[string]*job
	order []string // job ids, oldest first
}

// NewManager returns a Manager over c.
func NewManager(c Cache, opts Options) *Manager {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.KeepFinished <= 0 {
		opts.KeepFinished = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.Discard()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Manager{metrics: opts.Metrics, cache: c, conc: opts.Concurrency, keep: opts.KeepFinished, log: opts.Logger,
		ctx: ctx, stop: stop, jobs: make(map[string]*job)}
}

// Start validates req and starts a job for it in the background.
func (m *Manager) Start(req Request) (Status, error) {
	if len(req.Paths) == 0 {
		return Status{}, &badPath{"no paths given"}
	}
	hashes := make([]string, len(req.Paths))
	for i, p := range req.Paths {
		h, err := HashOf(p)
		if err != nil {
			return Status{}, err
		}
		hashes[i] = h
	}
	j := &job{status: Status{ID: newID(), Request: req, State: StateRunning, Started: time.Now().UTC()},
		done: make(chan struct{})}
	m.mu.Lock()
	m.jobs[j.status.ID] = j
	m.order = append(m.order, j.status.ID)
	m.pruneLocked()
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.run(j, hashes, req.Closure)
	}()
	return j.snapshot(), nil
}

// Run starts a job and waits for it; for callers without a server.
func (m *Manager) Run(ctx context.Context, req Request, progress func(Status)) (Status, error) {
	st, err := m.Start(req)
	if err != nil {
		return st, err
	}
	for {
		if st, err = m.Wait(ctx, st.ID, 200*time.Millisecond); err != nil {
			return st, err
		}
		if progress != nil {
			progress(st)
		}
		if st.State != StateRunning {
			return st, nil
		}
	}
}

// Status returns the job's current state, or ErrNoJob.
func (m *Manager) Status(id string) (Status, error) {
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	if !ok {
		return Status{}, ErrNoJob
	}
	return j.snapshot(), nil
}

// Wait returns the job's state once it has finished, or after at most d,
// whichever comes first: a long poll that lets a watcher see the end at
// once without asking often.
func (m *Manager) Wait(ctx context.Context, id string, d time.Duration) (Status, error) {
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	if !ok {
		return Status{}, ErrNoJob
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-j.done:
	case <-t.C:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	return j.snapshot(), nil
}

// List returns every job kept, oldest first.
func (m *Manager) List() []Status {
	m.mu.Lock()
	jobs := make([]*job, 0, len(m.order))
	for _, id := range m.order {
		jobs = append(jobs, m.jobs[id])
	}
	m.mu.Unlock()
	out := make([]Status, len(jobs))
	for i, j := range jobs {
		out[i] = j.snapshot()
	}
	return out
}

// Pending is the number of paths running jobs have found and yet to cache.
func (m *Manager) Pending() int {
	n := 0
	for _, st := range m.List() {
		if st.State == StateRunning {
			n += st.Paths - st.Cached - len(st.Failed)
		}
	}
	return n
}

// Close cancels running jobs and waits for them.
func (m *Manager) Close() {
	m.stop()
	m.wg.Wait()
}

// pruneLocked drops the oldest finished jobs past the limit.
func (m *Manager) pruneLocked() {
	finished := 0
	for _, id := range m.order {
		if m.jobs[id].snapshot().State != StateRunning {
			finished++
		}
	}
	m.order = slices.DeleteFunc(m.order, func(id string) bool {
		if finished <= m.keep || m.jobs[id].snapshot().State == StateRunning {
			return false
		}
		finished--
		delete(m.jobs, id)
		return true
	})
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run walks the requested paths (and closure), then downloads every NAR
// not on disk, at most m.conc at once.
func (m *Manager) run(j *job, hashes []string, closure bool) {
	ctx := m.ctx
	entries := m.walk(ctx, j, hashes, closure)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.conc)
	for _, e := range entries {
		g.Go(func() error {
			j.update(func(s *Status) { s.Fetching++ })
			// Bytes counted for this entry so far, under j.mu. Per entry,
			// not per NAR name: two paths with identical NAR files share a
			// name, and each counted its size in BytesTotal.
			var landed int64
			err := m.cache.EnsureNAR(gctx, e.name, func(done, _ int64) {
				j.update(func(s *Status) {
					s.BytesDone += done - landed
					m.metrics.PrefetchBytes.Add(float64(done - landed))
					landed = done
				})
			})
			j.update(func(s *Status) {
				s.Fetching--
				if err == nil {
					s.Cached++
				}
				if err == nil && e.size > 0 {
					// Make the total exact whatever the progress calls saw.
					s.BytesDone += e.size - landed
					landed = e.size
				}
			})
			if err != nil {
				j.fail(e.path, err)
			}
			return nil
		})
	}
	g.Wait()
	j.update(func(s *Status) {
		s.Finished = time.Now().UTC()
		s.State = StateDone
		if len(s.Failed) > 0 || ctx.Err() != nil {
			s.State = StateFailed
		}
	})
	close(j.done)
	st := j.snapshot()
	m.log.Info("prefetch finished", "job", st.ID, "state", st.State, "paths", st.Paths,
		"cached", st.Cached, "skipped", st.Skipped, "failed", len(st.Failed), "bytes", st.BytesDone,
		"duration", st.Finished.Sub(st.Started).Round(time.Millisecond))
}

// toFetch is a NAR a job has to download.
type toFetch struct {
	path, name string
	size       int64
}

// walk looks up every requested path (and, for a closure, each reference,
// level by level) and returns the NARs not yet on disk.
func (m *Manager) walk(ctx context.Context, j *job, hashes []string, closure bool) []toFetch {
	seen := make(map[string]bool)
	var mu sync.Mutex
	var out []toFetch
	level := slices.Compact(slices.Sorted(slices.Values(hashes)))
	for len(level) > 0 && ctx.Err() == nil {
		for _, h := range level {
			seen[h] = true
		}
		j.update(func(s *Status) { s.Paths += len(level) })
		var next []string
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(4 * m.conc)
		for _, h := range level {
			g.Go(func() error {
				e, err := m.cache.Lookup(gctx, h)
				if err != nil {
					j.fail(h, fmt.Errorf("narinfo: %w", err))
					return nil
				}
				have, err := m.cache.HasNAR(gctx, e.NARName)
				if err != nil {
					j.fail(e.Info.StorePath, err)
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				if have {
					j.update(func(s *Status) { s.Cached++; s.Skipped++ })
				} else {
					size := int64(e.Info.FileSize)
					out = append(out, toFetch{path: e.Info.StorePath, name: e.NARName, size: size})
					j.update(func(s *Status) { s.BytesTotal += size })
				}
				if closure {
					for _, ref := range e.Info.References {
						if rh := narinfo.HashOfStorePath(ref); rh != "" && !seen[rh] && !slices.Contains(next, rh) {
							next = append(next, rh)
						}
					}
				}
				return nil
			})
		}
		g.Wait()
		slices.Sort(next)
		level = next
	}
	return out
}
