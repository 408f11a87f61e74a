package verify

import (
	"errors"
	"sync"
	"time"
)

// ErrNoJob means no verify job has that id.
var ErrNoJob = errors.New("verify: no such job")

// ErrRunning means a verify job is running already: one at a time, as two
// would only compete for the disk.
var ErrRunning = errors.New("verify: a verify job is running")

// Job states.
const (
	StateRunning = "running"
	StateDone    = "done"   // the pass went through every entry
	StateFailed  = "failed" // the pass stopped early (an I/O error, shutdown)
)

// Status is a verify job's progress and findings.
type Status struct {
	ID string `json:"id"`
	Request
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Files and BytesTotal are the NAR files indexed when the pass
	// started; FilesDone and BytesDone what it has read so far.
	Files      int   `json:"files"`
	FilesDone  int   `json:"files_done"`
	BytesTotal int64 `json:"bytes_total"`
	BytesDone  int64 `json:"bytes_done"`
	// NotDeep counts NARs whose NarHash was wanted but whose compression
	// (br, lz4, lzip, lzma) has no decoder here: only their size and
	// FileHash were checked.
	NotDeep int `json:"not_deep"`
	// ProblemsTotal counts the bad entries found; Unrepaired those still
	// bad (all of them without Repair).
	ProblemsTotal int `json:"problems_total"`
	Unrepaired    int `json:"unrepaired"`
	// Problems are the bad entries from index From on: a watcher asks
	// for the ones it has not seen yet.
	From     int       `json:"from"`
	Problems []Problem `json:"problems"`
	// Error says why a failed pass stopped.
	Error string `json:"error,omitempty"`
}

// Sound reports whether the pass finished and nothing bad is left.
func (s Status) Sound() bool { return s.State == StateDone && s.Unrepaired == 0 }

// job is one pass's shared state.
type job struct {
	mu      sync.Mutex
	st      Status        // Problems holds all of them
	changed chan struct{} // closed (and replaced) on every problem and at the end
	done    chan struct{}
}

func newJob(id string, req Request) *job {
	return &job{
		st:      Status{ID: id, Request: req, State: StateRunning, Started: time.Now().UTC(), Problems: []Problem{}},
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// snapshot returns the status with the problems from index from on, and
// the channel closed at the next change.
func (j *job) snapshot(from int) (Status, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	from = max(0, min(from, len(st.Problems)))
	st.From = from
	st.Problems = append([]Problem{}, st.Problems[from:]...)
	return st, j.changed
}

func (j *job) update(fn func(*Status)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(&j.st)
}

func (j *job) addBytes(n int64) {
	j.update(func(s *Status) { s.BytesDone += n })
}

func (j *job) problem(p Problem) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.Problems = append(j.st.Problems, p)
	j.st.ProblemsTotal++
	if !p.Repaired {
		j.st.Unrepaired++
	}
	close(j.changed)
	j.changed = make(chan struct{})
}

func (j *job) finish(err error) {
	j.mu.Lock()
	j.st.Finished = time.Now().UTC()
	j.st.State = StateDone
	if err != nil {
		j.st.State, j.st.Error = StateFailed, err.Error()
	}
	close(j.changed)
	j.changed = make(chan struct{})
	j.mu.Unlock()
	close(j.done)
}
