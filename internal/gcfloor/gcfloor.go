// Package gcfloor keeps the Go heap from being collected while it is
// small: the garbage collector's goal is at least a floor, and twice the
// live heap (GOGC=100) above it.
//
// The proxy's live heap is a few MiB, while a narinfo hit through net/http
// leaves about a KiB of garbage. At GOGC=100 the heap goal is then the
// runtime's 4 MiB minimum, and under tens of thousands of hits a second the
// collector runs every 30-50 ms: each cycle's mark phase puts the idle
// processors to work, which on a small box takes CPU from whatever else it
// runs (clients, nginx, the benchmark's wrk) and stretches the tail. A
// floor of a few tens of MiB makes that a cycle every second or so, for
// memory the box has anyway; GOGC=100 applies again once the live heap is
// past half the floor.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Start holds the heap goal at floor bytes or more until stop is called.
// The percentage is retuned after every collection, from the live heap it
// left. stop restores the GOGC there was.
func Start(floor uint64) (stop func()) {
	t := &tuner{floor: floor, base: debug.SetGCPercent(100)}
	debug.SetGCPercent(t.base)
	if t.base < 0 {
		return func() {} // GOGC=off: the user decides
	}
	t.tune()
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.stopped {
			t.stopped = true
			debug.SetGCPercent(t.base)
		}
	}
}

type tuner struct {
	floor   uint64
	base    int // the GOGC there was: the percentage at or above the floor
	mu      sync.Mutex
	stopped bool
	sample  [1]metrics.Sample
}

// arm sets a finalizer on a fresh object: it runs after the next
// collection, retunes, and arms again.
func (t *tuner) arm() {
	runtime.SetFinalizer(new([16]byte), func(*[16]byte) {
		if t.tune() {
			t.arm()
		}
	})
}

// tune sets the percentage that makes the goal the floor for the live
// heap the last collection left, never below base. It reports false once
// stopped.
func (t *tuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	debug.SetGCPercent(Percent(t.liveHeap(), t.floor, t.base))
	return true
}

func (t *tuner) liveHeap() uint64 {
	t.sample[0].Name = "/gc/heap/live:bytes"
	metrics.Read(t.sample[:])
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return t.sample[0].Value.Uint64()
}

// Percent is the GOGC that makes the heap goal floor for a live heap of
// live bytes, and at least base. The runtime's goal is the larger of
// live*(1+GOGC/100) and its minimum heap, 4 MiB*GOGC/100: the percentage
// is the smaller of the two that reach floor.
func Percent(live, floor uint64, base int) int {
	if live == 0 {
		live = 1 << 20
	}
	if live >= floor {
		return base
	}
	byLive := (floor - live) * 100 / live
	byMinimum := floor * 100 / runtimeMinHeap
	return max(base, int(min(byLive, byMinimum)))
}

// runtimeMinHeap is the runtime's minimum heap goal at GOGC=100.
const runtimeMinHeap = 4 << 20
