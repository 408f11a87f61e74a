package store

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit runs the write transactions of concurrent callers together
// (group commit): the first caller commits at once, alone; the callers
// that arrive while that commit syncs share the next transaction, and so
// on. A bbolt commit costs two fdatasyncs whatever it holds, and the index
// has one writer: a cold closure asks for 25 paths at once, each with
// three writes (narinfo, commit intent, NAR row), which queued for the
// writer one sync pair each. Unlike bbolt's DB.Batch, a lone caller waits
// for no timer.
//
// A function may run twice: when one of a group fails, the transaction
// is rolled back and each function runs again in a transaction of its
// own, so one caller's error is never another's. Functions therefore
// change memory only through tx.OnCommit (as every writer here does).
type groupCommit struct {
	db *bolt.DB

	mu    sync.Mutex
	queue []*groupCall
	busy  bool // a leader is committing; the queue waits for the next
}

// errGroupPanic is the error of a caller whose group's transaction
// panicked in another caller's function.
var errGroupPanic = errors.New("store: a write in the same transaction panicked")

// maxGroup bounds a group, so one transaction stays short.
const maxGroup = 256

type groupCall struct {
	fn       func(*bolt.Tx) error
	wake     chan struct{} // done, or lead the next group
	finished bool
	err      error
}

// update runs fn in a write transaction, shared with concurrent callers;
// it returns once the transaction is committed (durable) or fn's error.
func (g *groupCommit) update(fn func(*bolt.Tx) error) error {
	c := &groupCall{fn: fn, wake: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead {
		<-c.wake
		if c.finished {
			return c.err
		}
		// Handed the lead: c is first in the queue.
	}
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	group := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()

	defer g.handOff()
	g.commit(group)
	return c.err
}

// handOff makes the first caller queued the next leader, or ends the
// leading when none is.
func (g *groupCommit) handOff() {
	g.mu.Lock()
	var next *groupCall
	if len(g.queue) > 0 {
		next = g.queue[0]
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	if next != nil {
		next.wake <- struct{}{}
	}
}

// commit runs group in one transaction, or each alone if one fails, and
// wakes each caller but the leader (group[0]).
func (g *groupCommit) commit(group []*groupCall) {
	defer func() {
		if p := recover(); p != nil {
			// Not to leave the others waiting for good.
			for _, c := range group[1:] {
				if !c.finished {
					c.finished, c.err = true, errGroupPanic
					c.wake <- struct{}{}
				}
			}
			panic(p)
		}
	}()
	err := g.db.Update(func(tx *bolt.Tx) error {
		for _, c := range group {
			if err := c.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	for _, c := range group {
		c.err = err
	}
	if err != nil && len(group) > 1 {
		for _, c := range group {
			c.err = g.db.Update(c.fn)
		}
	}
	for i, c := range group {
		c.finished = true
		if i > 0 {
			c.wake <- struct{}{}
		}
	}
}
