package netwatch

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openChanges opens an rtnetlink socket subscribed to link, address and
// route changes. It is non-blocking, so the returned file reads through
// the runtime's poller and Close ends a pending Read.
func openChanges() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netwatch: netlink socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netwatch: netlink bind: %w", err)
	}
	return os.NewFile(uintptr(fd), "netlink"), nil
}

func isNoBufs(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// interesting: every message of the groups subscribed to tells a change.
func interesting([]byte) bool { return true }
