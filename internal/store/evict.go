package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/crashpoint"
)

// bucketEvicting records the NAR files an eviction is removing, so a crash
// in the middle of one is finished at the next Open: never a row without
// its file nor a file without its row.
var bucketEvicting = []byte("evicting")

// NARUse is a NAR file on disk as eviction sees it.
type NARUse struct {
	// Name is the index's own memory, valid only during the call to fn:
	// a walk over 200,000 files copies only the names it keeps.
	Name []byte
	Size int64
	// Access is when it was last served, or stored if never served since,
	// in Unix nanoseconds.
	Access int64
	// Refillable: it can be fetched again once evicted
	// (NARSource.Refillable); never evict one that cannot.
	Refillable bool
}

// WalkSources calls fn for every NAR source row whose store path match
// accepts, with the NAR's name: the narinfos the cache holds, whether or
// not their NAR is on disk. match sees each row's store path cut out of
// the row without decoding it, so a walk over a million rows that match
// little is cheap.
func (s *Store) WalkSources(ctx context.Context, match func(storePath string) bool, fn func(name string, src NARSource) error) error {
	key := []byte(`"store_path":"`)
	defer s.unmapIndexPages()
	return s.db.View(func(tx *bolt.Tx) error {
		n := 0
		return tx.Bucket(bucketNARSource).ForEach(func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if n%unmapEvery == 0 {
					s.unmapIndexPagesIn(tx)
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
// The names are looked up in key order, so the pages read are read once
// and in file order.
func (s *Store) Refillable(ctx context.Context, names []string) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	out := make(map[string]bool, len(names))
	err := s.db.View(func(tx *bolt.Tx) error {
		// One cursor for all (Get makes one per call).
		c := tx.Bucket(bucketNARSource).Cursor()
		for _, name := range sorted {
			k, v := c.Seek([]byte(name))
			if v == nil || string(k) != name {
				continue
			}
			refill, ok := fastRefillable(v)
			if !ok {
				var src NARSource
				if err := json.Unmarshal(v, &src); err != nil {
					return fmt.Errorf("decode NAR source %s: %w", name, err)
				}
				refill = src.Refillable()
			}
			out[name] = refill
		}
		return nil
	})
	return out, err
}

// fastRefillable is NARSource.Refillable read straight from a source row
// (json.Marshal of a NARSource) without decoding it: the upstream is the
// only field it needs. ok is false when the row is not laid out as
// expected; decode it then.
func fastRefillable(row []byte) (refill, ok bool) {
	const key = `"upstream":"`
	i := bytes.Index(row, []byte(key))
	if i < 0 || i+len(key) >= len(row) {
		return false, false
	}
	// A quote inside a JSON string is escaped, so the key cannot match
	// inside another field's value. UploadedUpstream is "": the value is
	// empty exactly when the next byte closes it.
	return row[i+len(key)] != '"', UploadedUpstream == ""
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
		n := s.narRows(tx)
		for name, at := range m {
			v := n.get([]byte(name))
			if v == nil {
				continue // evicted or dropped meanwhile
			}
			var r narRow
			if err := decodeNARRow(v, &r); err != nil {
				return fmt.Errorf("decode NAR row %s: %w", name, err)
			}
			if !at.After(r.Access) {
				continue
			}
			served := r
			served.Access = at
			if err := n.replace([]byte(name), r, served); err != nil {
				return err
			}
		}
		return n.done()
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

// ErrNotEvicted means EvictNARs deleted none of the rows it was given:
// their NARs are still indexed and served. Any other error of EvictNARs
// comes after the rows went (a file not removed, which the next Open
// removes).
var ErrNotEvicted = errors.New("store: NAR rows not evicted")

// EvictNARs deletes the NAR files named and their index rows, in one
// transaction, and returns the bytes freed. Only the files go: narinfos and
// NAR sources stay, so a client holding a narinfo gets the NAR refilled
// from its upstream. A file being read stays readable through its open
// handle to the end.
//
// The rows are deleted first, and the names recorded as being evicted in
// the same transaction; then the files are removed. A crash in between
// leaves files without rows, which the next Open removes. A NAR refilled
// under the same name before its old file is removed keeps its new file
// (see Writer.Commit).
func (s *Store) EvictNARs(ctx context.Context, names []string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, nil
	}
	freed, gone, err := s.evictRows(names)
	if err != nil {
		return 0, fmt.Errorf("evict: %w: %w", ErrNotEvicted, err)
	}
	crashpoint.Hit("evict-rows-deleted")
	err = s.removeEvicted(gone)
	s.unmapIndexPages()
	return freed, err
}

// evictRows deletes the rows of names and records them as being evicted;
// it returns the bytes of the rows deleted and their names.
func (s *Store) evictRows(names []string) (int64, []string, error) {
	var freed int64
	var gone []string
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	marked := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		freed, gone = 0, gone[:0]
		n, ev := s.narRows(tx), tx.Bucket(bucketEvicting)
		if err := s.dropEvictRecords(ev); err != nil {
			return err
		}
		// In key order: each page is visited once, in file order.
		nc := n.nars.Cursor()
		var record []byte
		for _, name := range sorted {
			k, v := nc.Seek([]byte(name))
			if v == nil || string(k) != name {
				continue
			}
			size, err := n.deleteAt(nc, k, v)
			if err != nil {
				return err
			}
			record = append(append(record, name...), '\n')
			freed += size
			gone = append(gone, name)
		}
		if err := putEvictRecord(ev, record); err != nil {
			return err
		}
		if err := n.done(); err != nil {
			return err
		}
		// Marked before the commit, not in an OnCommit handler: those run
		// after other transactions already see the rows gone, and verify
		// (Strays) took the files in between for files no row names.
		s.setRemoving(gone, true)
		marked = true
		return nil
	})
	if err != nil && marked {
		s.setRemoving(gone, false)
	}
	return freed, gone, err
}

// setRemoving marks names as evicted with their files still to remove
// (on), or unmarks them.
func (s *Store) setRemoving(names []string, on bool) {
	s.rmMu.Lock()
	defer s.rmMu.Unlock()
	if s.removing == nil {
		s.removing = make(map[string]bool)
	}
	for _, name := range names {
		if on {
			s.removing[name] = true
		} else {
			delete(s.removing, name)
		}
	}
}

// removeEvicted removes the files of evicted rows, each unless a new file
// was committed under its name since. The names leave s.removing (and so
// their records may be dropped) only once the removals are durable: a
// record dropped before would leave, after a power cut, files that no row
// and no record names.
func (s *Store) removeEvicted(names []string) error {
	var errs []error
	removed := make([]string, 0, len(names))
	for _, name := range names {
		s.rmMu.Lock()
		if s.removing[name] {
			if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove NAR %s: %w", name, err))
			} else {
				removed = append(removed, name)
			}
		}
		s.rmMu.Unlock()
	}
	if err := syncRemoved(s.files, removed); err != nil {
		return errors.Join(append(errs, err)...)
	}
	s.rmMu.Lock()
	for _, name := range removed {
		delete(s.removing, name)
	}
	s.rmMu.Unlock()
	return errors.Join(errs...)
}

// resumeEvictions finishes, at Open, the evictions a crash interrupted:
// the files of recorded names whose row is gone are removed (a row that is
// back belongs to a refill), and the records dropped.
func (s *Store) resumeEvictions() error {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		nars := tx.Bucket(bucketNAR)
		return tx.Bucket(bucketEvicting).ForEach(func(k, v []byte) error {
			for name := range evictRecordNames(k, v) {
				if nars.Get([]byte(name)) == nil {
					names = append(names, name)
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("finish eviction of %s: %w", name, err)
		}
	}
	if err := syncRemoved(s.files, names); err != nil {
		return fmt.Errorf("finish evictions: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEvicting).Stats().KeyN == 0 {
			return nil
		}
		if err := tx.DeleteBucket(bucketEvicting); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketEvicting)
		return err
	})
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
