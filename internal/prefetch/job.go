// Package prefetch brings store paths (and their closures) into the cache
// ahead of the clients that will ask for them, as jobs whose progress can be
// watched, and watches upstreams for paths that were missing.
package prefetch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// badPath is an ErrBadPath whose text is msg alone.
type badPath struct{ msg string }

func (e *badPath) Error() string        { return e.msg }
func (e *badPath) Is(target error) bool { return target == ErrBadPath }

// HashOf returns the hash part of a store path ("/nix/store/<hash>-name"),
// a store path base name, or a bare hash.
func HashOf(arg string) (string, error) {
	if narinfo.ValidHash(arg) {
		return arg, nil
	}
	if h := narinfo.HashOfStorePath(strings.TrimSuffix(arg, "/")); h != "" {
		return h, nil
	}
	return "", &badPath{fmt.Sprintf("%q is not a store path (want /nix/store/<hash>-<name>, <hash>-<name> or <hash>)", arg)}
}

// Request asks for paths to be brought into the cache.
type Request struct {
	Paths   []string `json:"paths"`
	Closure bool     `json:"closure"` // also every path they reference, transitively
}

// Job states.
const (
	StateRunning = "running"
	StateDone    = "done"   // every path is cached
	StateFailed  = "failed" // some path could not be cached; see Failed
)

// Status is a snapshot of a job.
type Status struct {
	ID       string    `json:"id"`
	Request  Request   `json:"request"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Paths counts the paths known so far (a closure grows as it is
	// walked); Cached those already in the cache or brought in; Fetching
	// those with a NAR download under way.
	Paths    int `json:"paths"`
	Cached   int `json:"cached"`
	Skipped  int `json:"skipped"` // of Cached, those that were there already
	Fetching int `json:"fetching"`
	// Bytes of NAR files to download and downloaded so far.
	BytesTotal int64     `json:"bytes_total"`
	BytesDone  int64     `json:"bytes_done"`
	Failed     []Failure `json:"failed,omitempty"`
}

// Failure is a path that could not be cached, and why.
type Failure struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// job is a running or finished prefetch. Its counters are under mu.
type job struct {
	mu     sync.Mutex
	status Status
	done   chan struct{} // closed when the job has finished
}

func (j *job) snapshot() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.status
	s.Failed = append([]Failure(nil), s.Failed...)
	s.Request.Paths = append([]string(nil), s.Request.Paths...)
	return s
}

func (j *job) update(fn func(s *Status)) {
	j.mu.Lock()
	fn(&j.status)
	j.mu.Unlock()
}

func (j *job) fail(path string, err error) {
	j.update(func(s *Status) { s.Failed = append(s.Failed, Failure{Path: path, Error: err.Error()}) })
}

// Cache is what a job needs of the cache.
type Cache interface {
	Lookup(ctx context.Context, hash string) (cache.Entry, error)
	HasNAR(ctx context.Context, name string) (bool, error)
	EnsureNAR(ctx context.Context, name string, progress func(done, total int64)) error
}
