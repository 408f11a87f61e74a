//go:build !linux

package warm

import "os/exec"

// limitMemory is Linux's only; elsewhere the time bound stands alone.
func limitMemory(cmd *exec.Cmd, max int64) {}
