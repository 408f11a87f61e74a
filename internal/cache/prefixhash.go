package cache

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync/atomic"
)

// prefixHash hashes a part file's contiguous prefix as it grows, reading
// the bytes back through a handle of its own on its own goroutine (the
// page cache serves them). A download that lands in several ranges at once
// thus has its hash complete as soon as its last range lands, and the check
// still comes before the last byte is released and before commit.
type prefixHash struct {
	r      io.Reader // the part file from its start
	sum    hash.Hash
	also   io.Writer // sees every byte after sum; nil for none
	target atomic.Int64
	grew   chan struct{} // a nudge: target moved
	final  chan struct{} // closed: target moves no more
	quit   chan struct{} // closed: stop now
	done   chan struct{}
	hashed int64
	err    error // reading back failed
}

func newPrefixHash(r io.Reader, also io.Writer) *prefixHash {
	h := &prefixHash{r: r, sum: sha256.New(), also: also, grew: make(chan struct{}, 1),
		final: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{})}
	go h.run()
	return h
}

// hashBufferSize is the read-back chunk: large enough that the syscalls
// cost nothing next to the hashing.
const hashBufferSize = 256 << 10

func (h *prefixHash) run() {
	defer close(h.done)
	buf := make([]byte, hashBufferSize)
	for {
		if t := h.target.Load(); h.hashed < t {
			n, err := io.ReadFull(h.r, buf[:min(int64(len(buf)), t-h.hashed)])
			h.sum.Write(buf[:n])
			if h.also != nil {
				h.also.Write(buf[:n]) // a failure shows in its own result
			}
			h.hashed += int64(n)
			if err != nil {
				h.err = err
				return
			}
			continue
		}
		select {
		case <-h.grew:
		case <-h.quit:
			return
		case <-h.final:
			if h.hashed >= h.target.Load() {
				return
			}
		}
	}
}

// grow moves the prefix to n bytes.
func (h *prefixHash) grow(n int64) {
	h.target.Store(n)
	select {
	case h.grew <- struct{}{}:
	default:
	}
}

// result waits until the whole prefix is hashed and returns its digest and
// how many bytes it covers.
func (h *prefixHash) result() ([]byte, int64, error) {
	close(h.final)
	<-h.done
	return h.sum.Sum(nil), h.hashed, h.err
}

// stop ends the hashing without waiting for it to catch up.
func (h *prefixHash) stop() {
	select {
	case <-h.quit:
	default:
		close(h.quit)
	}
	<-h.done
}
