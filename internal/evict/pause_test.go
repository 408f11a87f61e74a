package evict

import (
	"context"
	"testing"
	"time"
)

// TestPassPauses: a pass pauses after each batch but the last, Pause
// times as long as the batch took, only while the proxy is busy and no
// download waits for the room it makes.
func TestPassPauses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		busy       bool
		roomWaiter bool
		pause      float64
		want       int // pauses
	}{
		{"busy", true, false, 2, 3},
		{"idle", false, false, 2, 0},
		{"busy, a download waits for room", true, true, 2, 0},
		{"busy, negative Pause", true, false, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDiskStore(t)
			for i := 1; i <= 6; i++ {
				d.add(t, tpath{id: i, size: kb})
			}
			// Four files to go, one a batch.
			e := New(d, Config{MaxSize: boundFor(d, 3*kb+kb/2), Batch: 1, Pause: tc.pause})
			e.busy = func() bool { return tc.busy }
			var pauses []time.Duration
			e.sleep = func(_ context.Context, d time.Duration) { pauses = append(pauses, d) }
			if tc.roomWaiter {
				e.roomWaiters.Add(1)
			}
			start := time.Now()
			rep, err := e.Pass(context.Background(), false)
			took := time.Since(start)
			if err != nil || len(rep.Evicted) != 4 {
				t.Fatalf("pass evicted %v: %v", evictedNames(rep), err)
			}
			if len(pauses) != tc.want {
				t.Fatalf("%d pauses %v, want %d", len(pauses), pauses, tc.want)
			}
			for _, p := range pauses {
				// Twice a batch's time, and a batch is part of the pass.
				if p <= 0 || p > 2*took {
					t.Errorf("paused %s in a pass of %s, want twice a batch's time", p, took)
				}
			}
		})
	}
}

// TestContentionBusy: goroutines waiting for a CPU make the process busy,
// and it is idle again once they are gone.
func TestContentionBusy(t *testing.T) {
	c := newContention()
	stop := make(chan struct{})
	for range 8 {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.busy() {
		if time.Now().After(deadline) {
			t.Fatal("eight spinning goroutines never made the process busy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	// A sleeping goroutine's wake-up may wait on a loaded machine now and
	// then; not every 10 ms for 5 s.
	deadline = time.Now().Add(5 * time.Second)
	for c.busy() {
		if time.Now().After(deadline) {
			t.Fatal("still busy 5 s after the spinning goroutines ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
