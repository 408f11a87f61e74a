package store

import (
	"sync"
	"time"
)

// accessLog remembers when NAR files were last served, in memory: a hit
// costs a map write under a mutex, never a write transaction. Eviction
// flushes it into the index in one batch per pass (FlushAccess), so the
// order survives a restart up to the last pass.
type accessLog struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (a *accessLog) touch(name string, at time.Time) {
	a.mu.Lock()
	if a.m == nil {
		a.m = make(map[string]time.Time)
	}
	a.m[name] = at
	a.mu.Unlock()
}

// get returns the access recorded since the last flush, if any.
func (a *accessLog) get(name string) (time.Time, bool) {
	a.mu.Lock()
	t, ok := a.m[name]
	a.mu.Unlock()
	return t, ok
}

// getBytes is get for a name in the index's memory, without copying it.
func (a *accessLog) getBytes(name []byte) (time.Time, bool) {
	a.mu.Lock()
	t, ok := a.m[string(name)]
	a.mu.Unlock()
	return t, ok
}

// take returns the accesses since the last call and starts a new batch.
func (a *accessLog) take() map[string]time.Time {
	a.mu.Lock()
	m := a.m
	a.m = nil
	a.mu.Unlock()
	return m
}
