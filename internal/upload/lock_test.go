package upload

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestLockOneHolder: however callers of one key interleave, one holds it at
// a time, and the key's entry is gone once the last lets go (an earlier
// version dropped it while a caller still waited, letting a newcomer in
// beside that caller).
func TestLockOneHolder(t *testing.T) {
	r := &Receiver{locks: make(map[string]*keyLock)}
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 200 {
				unlock := r.lock("k")
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				inside.Add(-1)
				unlock()
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Fatalf("%d callers held one key at once", m)
	}
	if len(r.locks) != 0 {
		t.Fatalf("%d key entries left after every caller let go", len(r.locks))
	}
}
