package evict

import (
	"runtime/metrics"
	"sync"
	"time"
)

// The process is busy when goroutines wait for a CPU now, or when since
// the last look (a batch's time, ~50 ms) slowWaits times one waited
// slowWait or more: a few such waits come from the garbage collector or
// the machine's other work now and then, on an idle proxy too.
const (
	slowWait  = 100 * time.Microsecond
	slowWaits = 8
)

// contention tells a pass whether the proxy's goroutines are waiting for
// a CPU, from the Go scheduler's own counts: serving hits, downloads,
// hashing. A pass pauses between its batches only then, so on an idle
// proxy it takes a third of the time, and on a busy one it leaves three
// quarters of a core to the work clients wait on.
type contention struct {
	mu      sync.Mutex
	samples []metrics.Sample
	slow    uint64 // waits of slowWait or more counted so far
}

func newContention() *contention {
	c := &contention{samples: []metrics.Sample{
		{Name: "/sched/goroutines/runnable:goroutines"},
		{Name: "/sched/latencies:seconds"},
	}}
	c.busy() // counts the waits since the process started
	return c
}

// busy reports whether goroutines wait for a CPU now, or slowWaits of
// them waited slowWait or more since the last call.
func (c *contention) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	metrics.Read(c.samples)
	waiting := c.samples[0].Value.Kind() == metrics.KindUint64 && c.samples[0].Value.Uint64() > 0
	var slow uint64
	if c.samples[1].Value.Kind() == metrics.KindFloat64Histogram {
		h := c.samples[1].Value.Float64Histogram()
		for i, n := range h.Counts {
			if h.Buckets[i] >= slowWait.Seconds() {
				slow += n
			}
		}
	}
	waited := slow >= c.slow+slowWaits
	c.slow = slow
	return waiting || waited
}
