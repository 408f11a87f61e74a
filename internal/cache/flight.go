package cache

import (
	"context"
	"errors"
	"sync"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// flight is one NAR download in progress, shared by every client that asks
// for that NAR meanwhile. The download lands in a part file; each client
// reads that file from the start through its own handle, then follows it as
// bytes land, so a joiner never waits for the whole file and memory stays
// constant however large the NAR or however many clients.
//
// The flight owns the download's state: the goroutine fetching it (Cache.fill)
// moves it with start, progress and finish, and everyone else reads it
// through watch, the one loop that waits on it.
type flight struct {
	name     string
	upstream string

	mu      sync.Mutex
	state   flightState
	part    partialOpener // set by start
	size    int64         // expected length; -1 when unknown
	written int64         // bytes in part from its start, all readable
	err     error         // why it ended, if not stored
	changed chan struct{} // closed and replaced on every change
	clients int
}

// partialOpener is the part file of a flight as its followers see it.
type partialOpener interface {
	OpenPartial() (store.NARFile, error)
}

// flightState is where a flight stands. It only moves forward: fetching,
// then streaming, then (maybe) verified, then one of the ends; or fetching
// straight to an end.
type flightState int

const (
	// fetching: asking the upstream; there is no part file yet.
	fetching flightState = iota
	// streaming: the upstream answered; bytes land in the part file.
	streaming
	// verified: every byte landed and matched the narinfo; the fill is
	// making the file durable and indexing it. Clients get the last byte
	// now: the cache's durability is not theirs to wait for. Until the
	// index names the file, those who ask stream it from the part file.
	verified
	// stored: the NAR is committed in the store (or was found there).
	stored
	// notKept: the NAR is not kept on disk (errNotKept): each client
	// that has not started streaming it asks the upstream itself.
	notKept
	// failed: the download failed with err.
	failed
)

func (s flightState) ended() bool { return s >= stored }

func (s flightState) String() string {
	return [...]string{"fetching", "streaming", "verified", "stored", "not-kept", "failed"}[s]
}

func newFlight(name, upstream string) *flight {
	return &flight{name: name, upstream: upstream, size: -1, changed: make(chan struct{})}
}

// start records that the upstream answered: from now on the NAR's bytes
// land in part, size of them (-1: unknown). It is called at most once,
// before any progress.
func (f *flight) start(part partialOpener, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != fetching {
		panic("cache: flight " + f.name + " started when " + f.state.String())
	}
	f.state, f.part, f.size = streaming, part, size
	f.signal()
}

// progress publishes that n more bytes are readable in the part file.
func (f *flight) progress(n int64) {
	f.mu.Lock()
	f.written += n
	f.signal()
	f.mu.Unlock()
}

// verify records that every byte landed and was checked: the fill
// commits next.
func (f *flight) verify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != streaming {
		panic("cache: flight " + f.name + " verified when " + f.state.String())
	}
	f.state = verified
	f.signal()
}

// finish records the outcome, once: err nil means the NAR is in the store,
// errNotKept that it is not kept on disk.
func (f *flight) finish(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state.ended() {
		panic("cache: flight " + f.name + " finished twice")
	}
	switch {
	case err == nil:
		f.state = stored
	case errors.Is(err, errNotKept):
		f.state = notKept
	default:
		f.state = failed
	}
	f.err = err
	f.signal()
}

func (f *flight) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// flightView is a flight as it stood at one moment.
type flightView struct {
	state   flightState
	part    partialOpener // nil while fetching, and when the NAR was found stored
	size    int64
	written int64
	err     error
	clients int
	changed <-chan struct{} // closed at the next change
}

func (f *flight) view() flightView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return flightView{f.state, f.part, f.size, f.written, f.err, f.clients, f.changed}
}

// watch calls see (if not nil) with the flight as it stands now and after
// each change, until see has seen it ended; it returns that last view. It
// stops early with see's error, or ctx's. Changes that happen while see
// runs are not lost: see is called again at once with the latest view.
func (f *flight) watch(ctx context.Context, see func(flightView) error) (flightView, error) {
	for {
		v := f.view()
		if see != nil {
			if err := see(v); err != nil {
				return v, err
			}
		}
		if v.state.ended() {
			return v, nil
		}
		select {
		case <-v.changed:
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

// addClient counts a follower in or (delta -1) out.
func (f *flight) addClient(delta int) {
	f.mu.Lock()
	f.clients += delta
	f.mu.Unlock()
}

// Download is a NAR download in progress, as the status page shows it.
type Download struct {
	NAR      string `json:"nar"`
	Upstream string `json:"upstream"`
	Bytes    int64  `json:"bytes"`
	Size     int64  `json:"size"` // -1 when unknown
	Clients  int    `json:"clients"`
}
