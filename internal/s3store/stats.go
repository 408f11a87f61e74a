package s3store

import (
	"sync"
	"time"
)

// Stats are a Bucket's operations since Open, as the status page shows
// them.
type Stats struct {
	// Requests counts the S3 operations, Errors those that failed
	// otherwise than with not-found or a lost conditional write.
	Requests, Errors int64
	// Latency is their time to the response headers, retries included,
	// summed.
	Latency time.Duration
}

// Stats returns the bucket's operations so far.
func (b *Bucket) Stats() Stats { return b.stats.get() }

// tally counts a Bucket's operations.
type tally struct {
	mu sync.Mutex
	s  Stats
}

func (t *tally) add(result string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Requests++
	if result == "error" {
		t.s.Errors++
	}
	t.s.Latency += d
}

func (t *tally) get() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s
}
