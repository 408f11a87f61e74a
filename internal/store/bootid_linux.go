package store

import (
	"os"
	"strings"
)

// bootID names this boot of the machine: what a note saved without fsync
// is good for (see ResumablePart.MarkNote). "" when it cannot be read.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
