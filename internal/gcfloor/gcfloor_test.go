package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		live, floor uint64
		base, want  int
	}{
		{live: 2 << 20, floor: 32 << 20, base: 100, want: 800}, // the minimum heap: 4 MiB*8
		{live: 6 << 20, floor: 32 << 20, base: 100, want: 433},
		{live: 16 << 20, floor: 32 << 20, base: 100, want: 100},
		{live: 20 << 20, floor: 32 << 20, base: 100, want: 100},
		{live: 64 << 20, floor: 32 << 20, base: 100, want: 100},
		{live: 8 << 20, floor: 32 << 20, base: 50, want: 300},
		{live: 1 << 20, floor: 32 << 20, base: 5000, want: 5000},
		{live: 0, floor: 32 << 20, base: 100, want: 800},
	} {
		if got := Percent(tc.live, tc.floor, tc.base); got != tc.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.live, tc.floor, tc.base, got, tc.want)
		}
	}
}

// TestStartRetunes: after collections the percentage follows the live
// heap, and stop puts the old one back.
func TestStartRetunes(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	stop := Start(256 << 20)
	for range 3 {
		runtime.GC()
	}
	runtime.Gosched()
	if p := debug.SetGCPercent(-1); p <= 100 {
		t.Errorf("GOGC with a 256 MiB floor over a small heap: %d, want > 100", p)
	}
	debug.SetGCPercent(100)
	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC after stop: %d, want 100", p)
	}
}
