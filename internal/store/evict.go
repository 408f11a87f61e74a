package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// bucketEvicting records the NAR files an eviction is removing, so a crash
// in the middle of one is finished at the next Open: never a row without
// its file nor a file without its row.
var bucketEvicting = []byte("evicting")

// NARUse is a NAR file on disk as eviction sees it.
type NARUse struct {
	Name   string
	Size   int64
	Access time.Time // last served, or stored if never served since
	// From the NAR's source row; zero when it has none.
	Hash      string    // store path hash of the narinfo that named it
	StorePath string    // and its store path
	Seen      time.Time // when that narinfo was first stored
	// Refillable is the source's Refillable: false means never evict.
	Refillable bool
}

// WalkNARs calls fn for every NAR file in the index, with the accesses
// not yet flushed applied. With withSource it also reads each NAR's source
// row (Hash, StorePath, Seen, Refillable), which doubles the cost; without,
// those are zero and Refillable is false: ask Refillable for the few files
// chosen. The NARUse is reused between calls: fn copies what it keeps. It
// reads in one transaction, and readers never wait on it.
func (s *Store) WalkNARs(ctx context.Context, withSource bool, fn func(*NARUse) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		srcs := tx.Bucket(bucketNARSource)
		var u NARUse
		var row narRow
		var src NARSource
		n := 0
		return tx.Bucket(bucketNAR).ForEach(func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			row = narRow{}
			if err := json.Unmarshal(v, &row); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", k, err)
			}
			u = NARUse{Name: string(k), Size: row.Size, Access: row.Access}
			if u.Access.IsZero() {
				u.Access = row.Stored
			}
			if t, ok := s.access.get(u.Name); ok {
				u.Access = t
			}
			if !withSource {
				return fn(&u)
			}
			if sv := srcs.Get(k); sv != nil {
				src = NARSource{}
				if err := json.Unmarshal(sv, &src); err != nil {
					return fmt.Errorf("decode NAR source %s: %w", k, err)
				}
				u.Hash, u.StorePath, u.Seen, u.Refillable = src.Hash, src.StorePath, src.Seen, src.Refillable()
				if u.Seen.IsZero() {
					// Rows from before Seen was recorded: the file's arrival
					// is the closest thing known.
					u.Seen = row.Stored
				}
			}
			return fn(&u)
		})
	})
}

// WalkSources calls fn for every NAR source row whose store path match
// accepts, with the NAR's name: the narinfos the cache holds, whether or
// not their NAR is on disk. match sees each row's store path cut out of
// the row without decoding it, so a walk over a million rows that match
// little is cheap.
func (s *Store) WalkSources(ctx context.Context, match func(storePath string) bool, fn func(name string, src NARSource) error) error {
	key := []byte(`"store_path":"`)
	return s.db.View(func(tx *bolt.Tx) error {
		n := 0
		return tx.Bucket(bucketNARSource).ForEach(func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			i := bytes.Index(v, key)
			if i < 0 {
				return nil
			}
			rest := v[i+len(key):]
			j := bytes.IndexByte(rest, '"')
			if j < 0 || !match(unsafeString(rest[:j])) {
				return nil
			}
			var src NARSource
			if err := json.Unmarshal(v, &src); err != nil {
				return fmt.Errorf("decode NAR source %s: %w", k, err)
			}
			return fn(string(k), src)
		})
	})
}

// unsafeString views b as a string for a call that does not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Refillable reports, for each name, whether its NAR can be fetched again
// once evicted (NARSource.Refillable); a NAR with no source row cannot.
func (s *Store) Refillable(ctx context.Context, names []string) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	err := s.db.View(func(tx *bolt.Tx) error {
		srcs := tx.Bucket(bucketNARSource)
		for _, name := range names {
			var src NARSource
			if v := srcs.Get([]byte(name)); v != nil {
				if err := json.Unmarshal(v, &src); err != nil {
					return fmt.Errorf("decode NAR source %s: %w", name, err)
				}
				out[name] = src.Refillable()
			}
		}
		return nil
	})
	return out, err
}

// FlushAccess writes the accesses recorded in memory into the index, in
// one transaction.
func (s *Store) FlushAccess(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := s.access.take()
	if len(m) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNAR)
		for name, at := range m {
			v := b.Get([]byte(name))
			if v == nil {
				continue // evicted or dropped meanwhile
			}
			var r narRow
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", name, err)
			}
			if !at.After(r.Access) {
				continue
			}
			r.Access = at
			row, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(name), row); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Not lost: the next flush tries again.
		for name, at := range m {
			if t, ok := s.access.get(name); !ok || at.After(t) {
				s.access.touch(name, at)
			}
		}
	}
	return err
}

// EvictNARs deletes the NAR files named and their index rows, and returns
// the bytes freed. Only the files go: narinfos and NAR sources stay, so a
// client holding a narinfo gets the NAR refilled from its upstream. A file
// being read stays readable through its open handle to the end.
//
// The names are first recorded as being evicted, then the files removed,
// then the rows and the record deleted: a crash at any point is finished by
// the next Open.
func (s *Store) EvictNARs(ctx context.Context, names []string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, nil
	}
	// The intent carries each row's Stored time: a refill that commits a new
	// file of the same name meanwhile has a newer one and is left alone.
	intents := make(map[string][]byte, len(names))
	err := s.db.Update(func(tx *bolt.Tx) error {
		nars, ev := tx.Bucket(bucketNAR), tx.Bucket(bucketEvicting)
		for _, name := range names {
			v := nars.Get([]byte(name))
			if v == nil {
				continue
			}
			var r narRow
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", name, err)
			}
			stamp, err := r.Stored.MarshalBinary()
			if err != nil {
				return err
			}
			if err := ev.Put([]byte(name), stamp); err != nil {
				return err
			}
			intents[name] = stamp
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("record eviction: %w", err)
	}
	var errs []error
	for name := range intents {
		if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove NAR %s: %w", name, err))
			delete(intents, name) // its row stays: the file is still there
		}
	}
	freed, err := s.finishEvictions(intents)
	return freed, errors.Join(append(errs, err)...)
}

// finishEvictions deletes the rows of evicted files whose row is still the
// one the intent recorded, and the intents.
func (s *Store) finishEvictions(intents map[string][]byte) (int64, error) {
	var freed, files int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		freed, files = 0, 0
		nars, ev := tx.Bucket(bucketNAR), tx.Bucket(bucketEvicting)
		for name, stamp := range intents {
			if err := ev.Delete([]byte(name)); err != nil {
				return err
			}
			v := nars.Get([]byte(name))
			if v == nil {
				continue // dropped meanwhile by a reader that found it gone
			}
			var r narRow
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", name, err)
			}
			if want, err := r.Stored.MarshalBinary(); err != nil || string(want) != string(stamp) {
				continue // a refill committed a new file under this name
			}
			if err := nars.Delete([]byte(name)); err != nil {
				return err
			}
			freed += r.Size
			files++
		}
		tx.OnCommit(func() { s.counted(-files, -freed) })
		return nil
	})
	return freed, err
}

// resumeEvictions finishes the evictions a crash interrupted, at Open.
func (s *Store) resumeEvictions() error {
	intents := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvicting).ForEach(func(k, v []byte) error {
			intents[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	if err != nil || len(intents) == 0 {
		return err
	}
	for name := range intents {
		if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("finish eviction of %s: %w", name, err)
		}
	}
	_, err = s.finishEvictions(intents)
	return err
}

// IndexSize is the size of the index file, which counts toward the bound
// along with the NAR files.
func (s *Store) IndexSize() int64 {
	var n int64
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

func jsonGet(b *bolt.Bucket, key string, v any) error {
	row := b.Get([]byte(key))
	if row == nil {
		return ErrNotFound
	}
	return json.Unmarshal(row, v)
}
