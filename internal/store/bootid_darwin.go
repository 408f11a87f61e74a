package store

import "golang.org/x/sys/unix"

// bootID names this boot of the machine: what a note saved without fsync
// is good for (see ResumablePart.MarkNote). "" when it cannot be read.
func bootID() string {
	id, err := unix.Sysctl("kern.bootsessionuuid")
	if err != nil {
		return ""
	}
	return id
}
