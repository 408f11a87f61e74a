//go:build !linux

package cache

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time the process has used so far: macOS has no
// per-thread rusage, so there it counts whatever else ran meanwhile.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
