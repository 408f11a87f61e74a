package evict

import "errors"

// Sentinel errors of the package; match them with errors.Is.
var (
	// ErrNoRoom means a NAR cannot be kept (larger than the bound, no room
	// made in time, or the disk failing writes): it is streamed, not kept.
	ErrNoRoom = errors.New("evict: no room to keep this NAR")
	// ErrLeaseHeld is what a Lessor's error wraps when another proxy holds
	// the lease; cmd/proxy maps fleet.ErrHeld to it.
	ErrLeaseHeld = errors.New("evict: another proxy is evicting")
)
