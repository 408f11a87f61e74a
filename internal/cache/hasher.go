package cache

import (
	"crypto/sha256"
	"hash"
	"io"
)

// hasher computes a download's sha256 on its own goroutine, so hashing a
// multi-GB NAR overlaps the network and disk work instead of adding to it.
// Buffers circulate: buffer hands out a free one, write passes a filled one
// to the hashing goroutine, which frees it when done.
type hasher struct {
	h       hash.Hash
	also    io.Writer // sees every buffer after h; nil for none
	free    chan []byte
	filled  chan []byte
	done    chan struct{}
	stopped bool
}

const (
	hashBuffers    = 4
	hashBufferSize = 256 << 10
)

// newHasher starts the hashing goroutine; also, if not nil, is written
// every buffer too, on that goroutine.
func newHasher(also io.Writer) *hasher {
	h := &hasher{
		h:      sha256.New(),
		also:   also,
		free:   make(chan []byte, hashBuffers),
		filled: make(chan []byte, hashBuffers),
		done:   make(chan struct{}),
	}
	for range hashBuffers {
		h.free <- make([]byte, hashBufferSize)
	}
	go func() {
		defer close(h.done)
		for b := range h.filled {
			h.h.Write(b)
			if h.also != nil {
				h.also.Write(b) // a failure shows in its own result
			}
			h.free <- b[:cap(b)]
		}
	}()
	return h
}

// buffer returns a buffer to read into; it waits while all are being hashed.
func (h *hasher) buffer() []byte { return <-h.free }

// write hashes b, a buffer from buffer(), which must not be touched after.
func (h *hasher) write(b []byte) { h.filled <- b }

// release returns an unused buffer.
func (h *hasher) release(b []byte) { h.free <- b }

// sum waits for the hashing to catch up and returns the digest.
func (h *hasher) sum() []byte {
	h.stop()
	return h.h.Sum(nil)
}

// stop ends the hashing goroutine; it is safe to call more than once.
func (h *hasher) stop() {
	if !h.stopped {
		h.stopped = true
		close(h.filled)
		<-h.done
	}
}
