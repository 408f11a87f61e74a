package warm

import (
	"os/exec"

	"golang.org/x/sys/unix"
)

// limitMemory bounds the data segment (heap and private mappings) of the
// started cmd: an evaluation that runs away fails with an out-of-memory
// error of its own instead of taking the host's memory from the proxy.
// It is set just after the start, before nix has evaluated anything.
func limitMemory(cmd *exec.Cmd, max int64) {
	if max <= 0 {
		return
	}
	lim := &unix.Rlimit{Cur: uint64(max), Max: uint64(max)}
	unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_DATA, lim, nil)
}
