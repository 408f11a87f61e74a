// Package netwatch tells of network changes the operating system reports:
// an address, a route or a link that came or went. On Linux it listens to
// rtnetlink, on macOS to a routing socket; elsewhere Watch returns
// ErrUnsupported and callers poll.
//
// A change is only a hint to look again (a laptop joined or left a
// network): events are coalesced, and their content is not parsed.
package netwatch

import (
	"context"
	"errors"
	"os"
)

// ErrUnsupported is Watch's error where the system reports no changes.
var ErrUnsupported = errors.New("netwatch: network changes not reported on this system")

// Watch returns a channel that receives after network changes until ctx
// ends, when it is closed. Changes close together arrive as one.
func Watch(ctx context.Context) (<-chan struct{}, error) {
	f, err := openChanges()
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	go func() {
		<-ctx.Done()
		f.Close() // ends the Read below
	}()
	go func() {
		defer close(ch)
		buf := make([]byte, 16<<10)
		for {
			n, err := f.Read(buf)
			if err != nil && !isTransient(err) {
				return
			}
			if err == nil && !interesting(buf[:n]) {
				continue
			}
			select {
			case ch <- struct{}{}:
			default: // one is pending: this change joins it
			}
		}
	}()
	return ch, nil
}

// isTransient reports a read error that does not end the watch: the
// kernel dropped messages (ENOBUFS) because we read too slowly, which
// is a change too.
func isTransient(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && isNoBufs(pe.Err)
}
