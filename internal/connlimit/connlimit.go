// Package connlimit bounds what clients can hold on a listener: how many
// connections are open at once, and how long a connection may sit on a
// write that makes no progress.
//
// The two bounds are what http.Server lacks for a box on a LAN. Without a
// connection bound, thousands of idle or trickling clients exhaust the
// process's file descriptors and the cache then fails to open its own
// files. Without a progress bound, a client that stops reading (a TCP
// receive window of zero, which keepalive never notices) holds its
// goroutine and descriptor forever; and http.Server's WriteTimeout, the
// usual answer, bounds the whole response and would cut a 2 GB NAR to a
// slow but live client.
package connlimit

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Wrap. Zero values turn a bound off.
type Options struct {
	// Max is the most connections open at once. Accept waits for one to
	// close beyond it, so further clients queue in the kernel's backlog
	// instead of being refused.
	Max int
	// WriteStall is how long one write may make no progress: every write
	// must complete, and every chunk of a sendfile move at most
	// sendfileChunk bytes, within it.
	WriteStall time.Duration
}

// sendfileChunk is how much of a ReadFrom (sendfile) one write deadline
// covers: a client must take 1 MiB per WriteStall to keep its connection,
// 17 KiB/s at the default of a minute.
const sendfileChunk = 1 << 20

// Listener is a net.Listener with the bounds of Options.
type Listener struct {
	net.Listener
	opts  Options
	slots chan struct{} // nil when Max is 0
	open  atomic.Int64
	done  chan struct{}
	once  sync.Once
}

// Wrap returns ln with the bounds of opts.
func Wrap(ln net.Listener, opts Options) *Listener {
	l := &Listener{Listener: ln, opts: opts, done: make(chan struct{})}
	if opts.Max > 0 {
		l.slots = make(chan struct{}, opts.Max)
	}
	return l
}

// Open returns the number of connections accepted and not yet closed.
func (l *Listener) Open() int { return int(l.open.Load()) }

// Accept waits for a free slot, then for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	l.open.Add(1)
	return &conn{Conn: c, l: l, stall: l.opts.WriteStall}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *Listener) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// conn frees its slot once when closed and refreshes its write deadline
// as writes make progress.
type conn struct {
	net.Conn
	l      *Listener
	stall  time.Duration
	closed atomic.Bool
	// deadlineSet is when the write deadline was last pushed back; writes
	// push it again only after stall/8, so a stream of small writes does
	// not reset a timer each.
	deadlineSet time.Time
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
		c.l.release()
	}
	return err
}

// refresh gives the next write stall to make progress. net/http writes a
// connection from one goroutine at a time, so deadlineSet needs no lock.
func (c *conn) refresh() error {
	if c.stall <= 0 {
		return nil
	}
	now := time.Now()
	if now.Sub(c.deadlineSet) < c.stall/8 {
		return nil
	}
	c.deadlineSet = now
	return c.Conn.SetWriteDeadline(now.Add(c.stall))
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.refresh(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel copy (sendfile) of the connection it wraps,
// in chunks of sendfileChunk so each gets its own deadline.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, r)
	}
	if c.stall <= 0 {
		return rf.ReadFrom(r)
	}
	// sendfile looks through one *io.LimitedReader to its *os.File, not
	// through two: narrow the caller's limit rather than wrapping it.
	outer, limited := r.(*io.LimitedReader)
	var total int64
	for {
		piece := &io.LimitedReader{R: r, N: sendfileChunk}
		if limited {
			if outer.N <= 0 {
				return total, nil
			}
			piece.R, piece.N = outer.R, min(outer.N, sendfileChunk)
		}
		want := piece.N
		c.deadlineSet = time.Time{} // each chunk gets a fresh deadline
		if err := c.refresh(); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(piece)
		total += n
		if limited {
			outer.N -= n
		}
		if err != nil || n < want {
			return total, err // n < want: the reader is at its end
		}
	}
}

// CloseWrite half-closes, as net/http does before closing a connection
// whose request body it did not read, so the client gets the response.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// writerOnly hides conn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }
