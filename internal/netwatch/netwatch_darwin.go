package netwatch

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openChanges opens a routing socket: the kernel writes a message to it
// for every route, address and interface change (RTM_*). It is
// non-blocking, so the returned file reads through the runtime's poller
// and Close ends a pending Read.
func openChanges() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_ROUTE, unix.SOCK_RAW, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("netwatch: route socket: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netwatch: route socket: %w", err)
	}
	return os.NewFile(uintptr(fd), "route"), nil
}

func isNoBufs(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// interesting keeps the messages that tell of an interface or an address
// coming or going; the routing socket also reports every ARP and cloned
// route, several a second on a busy LAN. The message type is byte 3 of
// every header (rt_msghdr, ifa_msghdr and if_msghdr alike).
func interesting(msg []byte) bool {
	if len(msg) < 4 {
		return false
	}
	switch msg[3] {
	case unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_IFINFO:
		return true
	}
	return false
}
