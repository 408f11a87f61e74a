package evict

import (
	"context"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// candidate is a NAR file eviction may drop, kept small and free of
// pointers: a pass over 200,000 files holds one of these for each, the
// garbage collector never scans them, and the names (in one arena) cost
// one allocation instead of one each.
type candidate struct {
	access int64 // unix nanoseconds
	size   int64
	off    int   // the name: names[off:off+n]
	n      int32 // (a name is ~60 bytes)
	refill bool  // it can be fetched again: store.NARUse.Refillable
}

// candidates are the NAR files on disk, as the walk found them.
type candidates struct {
	list  []candidate
	names []byte
}

func (c *candidates) name(x candidate) []byte { return c.names[x.off : x.off+int(x.n)] }

// walk reads every NAR file's size and last access from the store.
func (c *candidates) walk(ctx context.Context, st Store) error {
	// Sized for the files counted now, and names of about 60 bytes
	// ("<52-char hash>.nar.xz"), so neither grows in the common case.
	n := int(st.NARCount())
	c.list = make([]candidate, 0, n+n/16+16)
	c.names = make([]byte, 0, (n+n/16+16)*64)
	return st.WalkNARs(ctx, func(u *store.NARUse) error {
		c.list = append(c.list, candidate{access: u.Access, size: u.Size, off: len(c.names), n: int32(len(u.Name)), refill: u.Refillable})
		c.names = append(c.names, u.Name...)
		return nil
	})
}

// byAge hands candidates out oldest first. It makes a heap of them (in
// linear time) and takes off only as many as the pass wants: a pass
// usually takes a small part of the files, and sorting them all cost as
// much as the walk.
type byAge struct{ h []candidate }

// newByAge reorders list into a heap; list is byAge's from then on.
func newByAge(list []candidate) *byAge {
	b := &byAge{h: list}
	for i := len(list)/2 - 1; i >= 0; i-- {
		b.down(i, len(list))
	}
	return b
}

// next fills buf, up to its capacity, with the oldest candidates not yet
// handed out; it returns buf empty when there are none left.
func (b *byAge) next(buf []candidate) []candidate {
	buf = buf[:0]
	for len(buf) < cap(buf) && len(b.h) > 0 {
		n := len(b.h) - 1
		b.h[0], b.h[n] = b.h[n], b.h[0]
		b.down(0, n)
		buf = append(buf, b.h[n])
		b.h = b.h[:n]
	}
	return buf
}

// down sifts h[i] down in the heap h[:n].
func (b *byAge) down(i, n int) {
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if r := j + 1; r < n && b.h[r].access < b.h[j].access {
			j = r
		}
		if b.h[i].access <= b.h[j].access {
			return
		}
		b.h[i], b.h[j] = b.h[j], b.h[i]
		i = j
	}
}
