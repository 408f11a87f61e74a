package store

import (
	"sync"
	"sync/atomic"
)

// hotNarInfos keeps recently read narinfo texts in memory, so a hit costs a
// map lookup instead of a bbolt read transaction (ten allocations). It is
// bounded by bytes and simply starts over when full: narinfos are small and
// a mass query refills what it needs at once.
type hotNarInfos struct {
	mu    sync.RWMutex
	m     map[string]*hotNarInfo
	bytes int
	max   int
}

// hotNarInfo is one narinfo in the hot set, with the day it was last
// served (see servedLog): a hit compares one atomic, and writes only on
// the first hit of a day.
type hotNarInfo struct {
	text   []byte
	served atomic.Uint32
}

// hotNarInfoBytes bounds the memory the hot set holds (texts and keys).
const hotNarInfoBytes = 16 << 20

func newHotNarInfos(max int) *hotNarInfos {
	return &hotNarInfos{m: make(map[string]*hotNarInfo), max: max}
}

func (h *hotNarInfos) get(hash string) (*hotNarInfo, bool) {
	h.mu.RLock()
	e, ok := h.m[hash]
	h.mu.RUnlock()
	return e, ok
}

// put remembers text for hash, last served on day served (0: not yet).
// text must never be modified afterwards.
func (h *hotNarInfos) put(hash string, text []byte, served uint32) {
	size := len(hash) + len(text)
	e := &hotNarInfo{text: text}
	e.served.Store(served)
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.m[hash]; ok {
		h.bytes -= len(hash) + len(old.text)
	}
	if h.bytes+size > h.max {
		clear(h.m)
		h.bytes = 0
	}
	h.m[hash] = e
	h.bytes += size
}

// delete forgets hash (its narinfo was pruned).
func (h *hotNarInfos) delete(hash string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.m[hash]; ok {
		h.bytes -= len(hash) + len(old.text)
		delete(h.m, hash)
	}
}
