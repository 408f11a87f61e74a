package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"
)

// Options configure a Manager. Zero values mean defaults.
type Options struct {
	// KeepFinished is how many finished jobs stay listed; default 10.
	KeepFinished int
	Logger       *slog.Logger
	// Protected, if set, returns the NARs the cache must keep (those in
	// the closures of pinned paths and of the variants --keep-latest
	// keeps): a repair fetches those again with Refetch right after
	// dropping them, instead of leaving them to be fetched when asked for.
	Protected func(ctx context.Context) (map[string]bool, error)
	// Refetch brings a dropped NAR back from where its narinfo came from.
	Refetch func(ctx context.Context, name string) error
}

// Manager runs verify jobs, one at a time, in the background.
type Manager struct {
	st   Store
	keep int
	log  *slog.Logger
	opts Options

	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu    sync.Mutex
	jobs  map[string]*job
	order []string // oldest first
}

// NewManager returns a Manager over st.
func NewManager(st Store, opts Options) *Manager {
	if opts.KeepFinished <= 0 {
		opts.KeepFinished = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Manager{st: st, keep: opts.KeepFinished, log: opts.Logger, opts: opts, ctx: ctx, stop: stop, jobs: make(map[string]*job)}
}

// Start starts a pass, or returns ErrRunning (with the running job's
// status) when one runs.
func (m *Manager) Start(req Request) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.order {
		if st, _ := m.jobs[id].snapshot(0); st.State == StateRunning {
			st.Problems = nil
			return st, ErrRunning
		}
	}
	if m.ctx.Err() != nil {
		return Status{}, m.ctx.Err()
	}
	j := newJob(newID(), req)
	m.jobs[j.st.ID] = j
	m.order = append(m.order, j.st.ID)
	for len(m.order) > m.keep+1 { // +1: the running one
		delete(m.jobs, m.order[0])
		m.order = m.order[1:]
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.run(j)
	}()
	st, _ := j.snapshot(0)
	return st, nil
}

func (m *Manager) run(j *job) {
	p := &pass{st: m.st, req: j.st.Request, j: j, log: m.log, protect: m.opts.Protected, refetch: m.opts.Refetch}
	m.log.Info("verify started", "job", j.st.ID, "repair", j.st.Repair, "deep", j.st.Deep)
	err := p.run(m.ctx)
	j.finish(err)
	st, _ := j.snapshot(0)
	m.log.Info("verify finished", "job", st.ID, "state", st.State, "files", st.FilesDone, "bytes", st.BytesDone,
		"problems", st.ProblemsTotal, "unrepaired", st.Unrepaired, "error", st.Error,
		"duration", st.Finished.Sub(st.Started).Round(time.Millisecond))
}

// Status returns a job's status with its problems from index from on, or
// ErrNoJob.
func (m *Manager) Status(id string, from int) (Status, error) {
	j, ok := m.job(id)
	if !ok {
		return Status{}, ErrNoJob
	}
	st, _ := j.snapshot(from)
	return st, nil
}

// Wait returns a job's status as soon as it has a problem past from or has
// finished, or after at most d: a long poll that shows each bad entry as it
// is found.
func (m *Manager) Wait(ctx context.Context, id string, d time.Duration, from int) (Status, error) {
	j, ok := m.job(id)
	if !ok {
		return Status{}, ErrNoJob
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		st, changed := j.snapshot(from)
		if len(st.Problems) > 0 || st.State != StateRunning {
			return st, nil
		}
		select {
		case <-changed:
		case <-t.C:
			st, _ = j.snapshot(from)
			return st, nil
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
}

// List returns every job kept, oldest first, without their problems.
func (m *Manager) List() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.order))
	for _, id := range m.order {
		st, _ := m.jobs[id].snapshot(0)
		st.From, st.Problems = st.ProblemsTotal, []Problem{}
		out = append(out, st)
	}
	return out
}

// Close stops a running pass and waits for it.
func (m *Manager) Close() {
	m.stop()
	m.wg.Wait()
}

func (m *Manager) job(id string) (*job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	return j, ok
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
