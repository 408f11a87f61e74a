package upload

import (
	"maps"
	"sync"
)

// Stats are a Receiver's uploads since New, as the status page shows them.
type Stats struct {
	// Outcomes counts uploads of every kind by outcome: ok, exists,
	// rejected, error.
	Outcomes map[string]int64
	// Bytes are the bytes of the uploads kept (outcome ok).
	Bytes int64
}

// Stats returns the uploads so far.
func (r *Receiver) Stats() Stats { return r.stats.get() }

// tally counts a Receiver's uploads.
type tally struct {
	mu sync.Mutex
	s  Stats
}

func (t *tally) add(outcome string, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.s.Outcomes == nil {
		t.s.Outcomes = map[string]int64{}
	}
	t.s.Outcomes[outcome]++
	if outcome == "ok" {
		t.s.Bytes += n
	}
}

func (t *tally) get() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{Outcomes: maps.Clone(t.s.Outcomes), Bytes: t.s.Bytes}
}
