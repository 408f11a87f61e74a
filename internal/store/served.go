package store

import (
	"context"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketServed holds, for each narinfo, the day it was last served or
// stored (4 bytes, big-endian days since the Unix epoch, UTC): pruning
// keeps a narinfo as long as a client may still hold it.
var bucketServed = []byte("served")

// keyServedSince (in meta) is the day the index began recording bucketServed:
// a narinfo with no stamp counts as served that day, so one from before the
// upgrade is kept as long as a client that got it just before may hold it.
var keyServedSince = []byte("served-since")

const daySeconds = 24 * 60 * 60

// dayOf is t's day since the Unix epoch, in UTC.
func dayOf(t time.Time) uint32 { return uint32(t.Unix() / daySeconds) }

// dayEnd is when day d ends: a narinfo served that day may be held by a
// client from then on for as long as its TTL.
func dayEnd(d uint32) time.Time { return time.Unix(int64(d+1)*daySeconds, 0).UTC() }

func putDay(d uint32) []byte { return binary.BigEndian.AppendUint32(nil, d) }

func getDay(v []byte) uint32 {
	if len(v) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

// servedLog records which narinfos were served on which day, in memory: a
// hit on the hot set compares one atomic with today and, only on its first
// hit of the day, adds the hash to the dirty set under a mutex. Never a
// write transaction per hit: FlushServed writes the dirty set in batches.
type servedLog struct {
	// today is the current day, advanced by FlushServed (every eviction
	// pass) and PutNarInfo, so the hit path never reads the clock.
	today atomic.Uint32

	mu    sync.Mutex
	dirty map[string]uint32
}

// tick advances today to now's day.
func (l *servedLog) tick(now time.Time) uint32 {
	d := dayOf(now)
	for {
		old := l.today.Load()
		if old >= d || l.today.CompareAndSwap(old, d) {
			return max(old, d)
		}
	}
}

// mark records that hash was served (or stored) on day d.
func (l *servedLog) mark(hash string, d uint32) {
	l.mu.Lock()
	if l.dirty == nil {
		l.dirty = make(map[string]uint32)
	}
	if old, ok := l.dirty[hash]; !ok || old < d {
		l.dirty[strings.Clone(hash)] = d // hash may be a view of a request's URL
	}
	l.mu.Unlock()
}

// get is the day recorded for hash since the last flush, 0 if none.
func (l *servedLog) get(hash string) uint32 {
	l.mu.Lock()
	d := l.dirty[hash]
	l.mu.Unlock()
	return d
}

// stampServed stamps a hot narinfo as served today: one atomic load, and a
// mark on its first hit of the day.
func (s *Store) stampServed(hash string, e *hotNarInfo) {
	if d := s.servedDays.today.Load(); e.served.Load() < d {
		e.served.Store(d)
		s.servedDays.mark(hash, d)
	}
}

// servedFlushBatch is how many stamps one write transaction takes.
const servedFlushBatch = 8192

// FlushServed writes the days narinfos were served, recorded in memory,
// into the index in batches, and advances the day hits are stamped with.
// The eviction pass calls it; so does Close.
func (s *Store) FlushServed(ctx context.Context) error {
	s.servedDays.tick(s.now())
	s.servedDays.mu.Lock()
	m := s.servedDays.dirty
	s.servedDays.dirty = nil
	s.servedDays.mu.Unlock()
	if len(m) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(m)) // bbolt writes sorted keys fastest
	for i, batch := range chunks(keys, servedFlushBatch) {
		if err := ctx.Err(); err != nil {
			s.unflushed(m, keys[i*servedFlushBatch:])
			return err
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			b, nis := tx.Bucket(bucketServed), tx.Bucket(bucketNarInfo)
			for _, hash := range batch {
				k := []byte(hash)
				if nis.Get(k) == nil || getDay(b.Get(k)) >= m[hash] {
					continue // pruned meanwhile, or no news
				}
				if err := b.Put(k, putDay(m[hash])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			// Not lost: the next flush tries again.
			s.unflushed(m, keys[i*servedFlushBatch:])
			return err
		}
	}
	return nil
}

// unflushed puts stamps a flush did not write back into the dirty set.
func (s *Store) unflushed(m map[string]uint32, keys []string) {
	for _, k := range keys {
		s.servedDays.mark(k, m[k])
	}
}

// chunks is slices.Chunk, indexable.
func chunks[T any](s []T, n int) func(func(int, []T) bool) {
	return func(yield func(int, []T) bool) {
		for i := 0; i*n < len(s); i++ {
			if !yield(i, s[i*n:min((i+1)*n, len(s))]) {
				return
			}
		}
	}
}

// initServed records the day the index began stamping narinfos, once.
func initServed(tx *bolt.Tx, now time.Time) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keyServedSince) != nil {
		return nil
	}
	return meta.Put(keyServedSince, putDay(dayOf(now)))
}
