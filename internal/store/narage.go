package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The narage bucket orders the NAR files by when they were last served:
// its key is a row's age key (ageKey: the last access, or when stored if
// never served since, then the name) and its value the NAR's size and
// refill copy (ageValue). An eviction pass reads the oldest rows only, as
// far as it needs, instead of every NAR row, and its deletes here fall on
// neighbouring pages.
//
// It is derived from the nar bucket and kept in the same transaction as
// every change to it by narRows, which also keeps the totals
// (keyNARTotals), so Open reads two numbers instead of walking every row.
var (
	bucketNARAge = []byte("narage")
	keyNARTotals = []byte("nar-totals") // count, bytes: 8 bytes each, big-endian
)

// lastUse is the time a row is ordered by.
func (r *narRow) lastUse() time.Time {
	if r.Access.IsZero() {
		return r.Stored
	}
	return r.Access
}

// ageKey appends the age key of name last used at at to dst: the time in
// Unix nanoseconds, big-endian with the sign bit flipped so byte order is
// time order, then the name.
func ageKey(dst []byte, at time.Time, name []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(at.UnixNano())^1<<63)
	return append(dst, name...)
}

// splitAgeKey is ageKey undone; ok is false for a key too short.
func splitAgeKey(k []byte) (at int64, name []byte, ok bool) {
	if len(k) <= 8 {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(k) ^ 1<<63), k[8:], true
}

// ageValue is a narage row's value: the size, then the refill copy.
func ageValue(size int64, r refill) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 9), uint64(size)), byte(r))
}

func splitAgeValue(v []byte) (size int64, r refill, ok bool) {
	if len(v) != 9 {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), refill(v[8]), true
}

// narRows writes NAR rows within one write transaction and keeps what is
// derived from them in step: each row's place in the narage bucket and the
// totals. Every writer of the nar bucket goes through it and ends with
// done.
type narRows struct {
	s           *Store
	tx          *bolt.Tx
	nars, age   *bolt.Bucket
	files, size int64 // the change to the totals
	key         []byte
}

func (s *Store) narRows(tx *bolt.Tx) *narRows {
	return &narRows{s: s, tx: tx, nars: tx.Bucket(bucketNAR), age: ageBucket(tx)}
}

// ageBucket is the narage bucket, set to fill its pages: rows are added
// at its end (a NAR served or stored now is the newest) and deleted from
// its start, where bbolt's default of splitting pages half full would
// leave every page half empty, and a pass would read and rewrite twice
// the pages.
func ageBucket(tx *bolt.Tx) *bolt.Bucket {
	b := tx.Bucket(bucketNARAge)
	b.FillPercent = 0.95
	return b
}

// get returns name's row as stored (nil: none), valid until the next change.
func (n *narRows) get(name []byte) []byte { return n.nars.Get(name) }

// put writes r as name's row, replacing any row it had.
func (n *narRows) put(name []byte, r narRow) error {
	if v := n.nars.Get(name); v != nil {
		var old narRow
		if err := decodeNARRow(v, &old); err != nil {
			return fmt.Errorf("decode NAR row %s: %w", name, err)
		}
		return n.replace(name, old, r)
	}
	return n.add(name, r)
}

// replace writes r as name's row in place of old, its row as decoded.
func (n *narRows) replace(name []byte, old, r narRow) error {
	if err := n.unindex(name, old); err != nil {
		return err
	}
	return n.add(name, r)
}

// add writes r as name's row, which has none in the age order.
func (n *narRows) add(name []byte, r narRow) error {
	row, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := n.nars.Put(name, row); err != nil {
		return fmt.Errorf("index NAR %s: %w", name, err)
	}
	n.key = ageKey(n.key[:0], r.lastUse(), name)
	if err := n.age.Put(n.key, ageValue(r.Size, r.Refill)); err != nil {
		return fmt.Errorf("index NAR %s by age: %w", name, err)
	}
	n.files++
	n.size += r.Size
	return nil
}

// delete deletes name's row, if it has one, and returns its size.
func (n *narRows) delete(name []byte) (size int64, found bool, err error) {
	v := n.nars.Get(name)
	if v == nil {
		return 0, false, nil
	}
	if size, err = n.unindexRow(name, v); err != nil {
		return 0, false, err
	}
	return size, true, n.nars.Delete(name)
}

// deleteAt is delete for the row a cursor of the nar bucket is at, its
// key name and value old; the cursor moves on to the next row.
func (n *narRows) deleteAt(c *bolt.Cursor, name, old []byte) (int64, error) {
	size, err := n.unindexRow(name, old)
	if err != nil {
		return 0, err
	}
	return size, c.Delete()
}

// unindexRow takes the row v of name, as stored, out of the narage bucket
// and the totals and returns its size.
func (n *narRows) unindexRow(name, v []byte) (int64, error) {
	var r narRow
	if err := decodeNARRow(v, &r); err != nil {
		return 0, fmt.Errorf("decode NAR row %s: %w", name, err)
	}
	return r.Size, n.unindex(name, r)
}

// unindex takes name's row r out of the narage bucket and the totals.
func (n *narRows) unindex(name []byte, r narRow) error {
	n.key = ageKey(n.key[:0], r.lastUse(), name)
	if err := n.age.Delete(n.key); err != nil {
		return err
	}
	n.files--
	n.size -= r.Size
	return nil
}

// done writes the totals' change into the transaction, and into memory
// once it commits (a change rather than the totals: bbolt runs commit
// handlers after releasing the writer lock, so two commits' handlers may
// run in either order).
func (n *narRows) done() error {
	if n.files == 0 && n.size == 0 {
		return nil
	}
	meta := n.tx.Bucket(bucketMeta)
	files, size, err := readNARTotals(meta)
	if err != nil {
		return err
	}
	if err := meta.Put(keyNARTotals, narTotals(files+n.files, size+n.size)); err != nil {
		return fmt.Errorf("NAR totals: %w", err)
	}
	df, ds := n.files, n.size
	n.tx.OnCommit(func() { n.s.counted(df, ds) })
	n.files, n.size = 0, 0
	return nil
}

func narTotals(files, size int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(files)), uint64(size))
}

func readNARTotals(meta *bolt.Bucket) (files, size int64, err error) {
	v := meta.Get(keyNARTotals)
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("index: NAR totals are %d bytes, want 16", len(v))
	}
	files, size = readTotals(v)
	return files, size, nil
}

// readTotals reads narTotals from the start of v (16 bytes at least).
func readTotals(v []byte) (files, size int64) {
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
}

// loadNARTotals reads the totals into memory, at Open.
func (s *Store) loadNARTotals() error {
	return s.db.View(func(tx *bolt.Tx) error {
		files, size, err := readNARTotals(tx.Bucket(bucketMeta))
		s.narCount.Store(files)
		s.narBytes.Store(size)
		return err
	})
}

// NARsByAge calls fn for the NAR files in the index, least recently served
// first (the accesses not yet flushed counted), until fn returns false or
// an error. It reads the narage bucket only as far as fn goes: an eviction
// pass freeing a tenth of the files reads a tenth of it. The NARUse and
// its Name are valid only during the call to fn. It reads in one
// transaction, and readers never wait on it.
func (s *Store) NARsByAge(ctx context.Context, fn func(*NARUse) (bool, error)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		// Rows served since the last flush are held back and handed out
		// at their new time: later than where the bucket has them.
		var held []NARUse
		yieldHeld := func(before int64) (bool, error) {
			for len(held) > 0 && held[0].Access < before {
				u := held[0]
				held = held[1:]
				if more, err := fn(&u); !more || err != nil {
					return false, err
				}
			}
			return true, nil
		}
		var u NARUse
		c := tx.Bucket(bucketNARAge).Cursor()
		n := 0
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			at, name, ok := splitAgeKey(k)
			size, fill, ok2 := splitAgeValue(v)
			if !ok || !ok2 {
				return fmt.Errorf("index: NAR age row %x is malformed", k)
			}
			u = NARUse{Name: name, Size: size, Access: at, Refillable: fill == refillYes}
			if t, ok := s.access.getBytes(name); ok && t.UnixNano() > at {
				u.Name, u.Access = slices.Clone(name), t.UnixNano()
				i, _ := slices.BinarySearchFunc(held, u.Access, func(h NARUse, t int64) int { return cmp.Compare(h.Access, t) })
				held = slices.Insert(held, i, u)
				continue
			}
			if more, err := yieldHeld(at); !more || err != nil {
				return err
			}
			if more, err := fn(&u); !more || err != nil {
				return err
			}
		}
		_, err := yieldHeld(1<<63 - 1)
		return err
	})
}

// LookupNARs returns the NAR files among names that the index has, by
// name, with the accesses not yet flushed counted.
func (s *Store) LookupNARs(ctx context.Context, names []string) (map[string]NARUse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]NARUse, len(names))
	err := s.db.View(func(tx *bolt.Tx) error {
		nars := tx.Bucket(bucketNAR)
		for _, name := range names {
			v := nars.Get([]byte(name))
			if v == nil {
				continue
			}
			var r narRow
			if err := decodeNARRow(v, &r); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", name, err)
			}
			at := r.lastUse()
			if t, ok := s.access.get(name); ok && t.After(at) {
				at = t
			}
			out[name] = NARUse{Name: []byte(name), Size: r.Size, Access: at.UnixNano(), Refillable: r.Refill == refillYes}
		}
		return nil
	})
	return out, err
}
