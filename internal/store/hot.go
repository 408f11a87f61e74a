package store

import "sync"

// hotNarInfos keeps recently read narinfo texts in memory, so a hit costs a
// map lookup instead of a bbolt read transaction (ten allocations). It is
// bounded by bytes and simply starts over when full: narinfos are small and
// a mass query refills what it needs at once.
type hotNarInfos struct {
	mu    sync.RWMutex
	m     map[string][]byte
	bytes int
	max   int
}

// hotNarInfoBytes bounds the memory the hot set holds (texts and keys).
const hotNarInfoBytes = 16 << 20

func newHotNarInfos(max int) *hotNarInfos {
	return &hotNarInfos{m: make(map[string][]byte), max: max}
}

func (h *hotNarInfos) get(hash string) ([]byte, bool) {
	h.mu.RLock()
	text, ok := h.m[hash]
	h.mu.RUnlock()
	return text, ok
}

// put remembers text for hash. text must never be modified afterwards.
func (h *hotNarInfos) put(hash string, text []byte) {
	size := len(hash) + len(text)
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.m[hash]; ok {
		h.bytes -= len(hash) + len(old)
	}
	if h.bytes+size > h.max {
		clear(h.m)
		h.bytes = 0
	}
	h.m[hash] = text
	h.bytes += size
}
