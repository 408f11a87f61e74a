package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// SIGHUP reloads the configuration as nginx operators expect, by running
// the whole cache again inside the same process: the config file, the key
// and token files and the upstream list are read as at start, checked, and
// only a configuration that passes replaces the running one, which then
// drains like on SIGTERM (in-flight responses get --shutdown-timeout). The
// listening socket stays open throughout, so a client connecting meanwhile
// waits in the kernel's queue for the next generation instead of being
// refused. Swapping keys, tokens and upstreams inside a running cache would
// reach into every package that holds one; a new generation gets them all
// at once, from one checked configuration.

// reloader re-reads the configuration for a reload: the same command line
// and environment as at start, so what changed is what the files say.
type reloader func() (*serveConfig, *slog.Logger, error)

// reloadable returns the configuration a reload would switch to, or why
// it must not: --listen cannot move while the socket is kept open.
func reloadable(running *serveConfig, load reloader) (*serveConfig, *slog.Logger, error) {
	next, log, err := load()
	if err != nil {
		return nil, nil, err
	}
	if next.listen != running.listen {
		return nil, nil, fmt.Errorf("--listen %s differs from the running %s: restart to move the listener", next.listen, running.listen)
	}
	return next, log, nil
}

// sharedListener accepts on one listening socket for a succession of
// servers, one generation after another: each gets a view whose Close
// ends that server's Serve without closing the socket. A connection
// accepted while no view asks waits here for the next one.
type sharedListener struct {
	ln      net.Listener
	accepts chan accepted
	done    chan struct{}
	once    sync.Once
}

type accepted struct {
	conn net.Conn
	err  error
}

func shareListener(ln net.Listener) *sharedListener {
	s := &sharedListener{ln: ln, accepts: make(chan accepted), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

func (s *sharedListener) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		select {
		case s.accepts <- accepted{c, err}:
		case <-s.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// view returns a listener for one generation's server.
func (s *sharedListener) view() net.Listener {
	return &listenerView{s: s, closed: make(chan struct{})}
}

// Close closes the socket, for good.
func (s *sharedListener) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.ln.Close()
	})
	return err
}

type listenerView struct {
	s      *sharedListener
	closed chan struct{}
	once   sync.Once
}

func (v *listenerView) Accept() (net.Conn, error) {
	select {
	case <-v.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case a := <-v.s.accepts:
		return a.conn, a.err
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.s.done:
		return nil, net.ErrClosed
	}
}

func (v *listenerView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *listenerView) Addr() net.Addr { return v.s.ln.Addr() }

// unread counts the connections a server has accepted that have not sent
// a request yet. Go's server drops such a connection without an answer if
// its request arrives once Shutdown has begun, so a generation that ends
// first stops accepting, then waits for these (briefly: a client may open
// a connection it does not use yet), then shuts down.
type unread struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// hook is the server's ConnState.
func (u *unread) hook(c net.Conn, st http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns == nil {
		u.conns = map[net.Conn]bool{}
	}
	if st == http.StateNew {
		u.conns[c] = true
	} else {
		delete(u.conns, c)
	}
}

// wait returns once no accepted connection is waiting for its request, or
// after max.
func (u *unread) wait(max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		u.mu.Lock()
		n := len(u.conns)
		u.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
