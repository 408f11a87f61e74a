package cache

import (
	"context"
	"io/fs"
	"sync"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// flight is one NAR download in progress, shared by every client that asks
// for that NAR meanwhile. The download lands in a temp file; each client
// reads that file from the start through its own handle, then follows it as
// bytes land, so a joiner never waits for the whole file and memory stays
// constant however large the NAR or however many clients.
type flight struct {
	name     string
	upstream string

	// ready is closed once the upstream has answered with a body (partial
	// and size are set) or the download has failed before that.
	ready   chan struct{}
	partial interface {
		OpenPartial() (store.NARFile, error)
	}
	size int64 // expected length; -1 when unknown

	mu      sync.Mutex
	written int64
	done    bool
	err     error
	changed chan struct{} // closed and replaced on every change
	clients int
}

func newFlight(name string) *flight {
	return &flight{name: name, ready: make(chan struct{}), size: -1, changed: make(chan struct{})}
}

// openPartial opens the file as downloaded so far; fs.ErrNotExist when the
// flight never created one (it found the NAR already stored).
func (f *flight) openPartial() (store.NARFile, error) {
	if f.partial == nil {
		return nil, fs.ErrNotExist
	}
	return f.partial.OpenPartial()
}

// progress publishes that n more bytes are in the temp file.
func (f *flight) progress(n int64) {
	f.mu.Lock()
	f.written += n
	f.signal()
	f.mu.Unlock()
}

// finish records the outcome; err nil means the file is committed.
func (f *flight) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.signal()
	f.mu.Unlock()
}

func (f *flight) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// flightState is a snapshot for a follower, with the channel to wait on
// for the next change.
type flightState struct {
	written int64
	done    bool
	err     error
	changed <-chan struct{}
}

func (f *flight) state() flightState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return flightState{f.written, f.done, f.err, f.changed}
}

// wait blocks until the download ends or ctx does.
func (f *flight) wait(ctx context.Context) error {
	for {
		st := f.state()
		if st.done {
			return st.err
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Download is a NAR download in progress, as the status page shows it.
type Download struct {
	NAR      string `json:"nar"`
	Upstream string `json:"upstream"`
	Bytes    int64  `json:"bytes"`
	Size     int64  `json:"size"` // -1 when unknown
	Clients  int    `json:"clients"`
}
