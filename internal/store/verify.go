package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/crashpoint"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// This file is the store's side of `verify`: it hands out the index rows
// and the files, and removes what verify found bad, each step in its own
// short transaction. Hashing a file happens outside any transaction.

// Errors of the verify side.
var (
	// ErrBusy means the NAR is being written right now; leave it be.
	ErrBusy = errors.New("store: NAR is being written")
	// ErrChanged means the entry is no longer what was checked: a
	// download replaced or indexed it meanwhile.
	ErrChanged = errors.New("store: entry changed since it was checked")
)

// NAREntry is an indexed NAR file with what the narinfo naming it says the
// file must be.
type NAREntry struct {
	Name string
	Size int64 // as indexed when the file was committed
	// Source is the narsrc row of the narinfo naming the file (FileHash,
	// FileSize, NarHash, NarSize, Compression); HasSource is false when
	// no narinfo names it.
	Source    NARSource
	HasSource bool
	// Err is set when a row could not be decoded.
	Err error
}

// NAREntries returns up to limit indexed NAR files whose names sort after
// after, in name order. Each call is one short read transaction, so a walk
// of the whole index never holds one open while files are read.
func (s *Store) NAREntries(ctx context.Context, after string, limit int) ([]NAREntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []NAREntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketNAR).Cursor()
		src := tx.Bucket(bucketNARSource)
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		evicting := tx.Bucket(bucketEvicting)
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			if evicting.Get(k) != nil {
				continue // going away right now: not verify's to judge
			}
			e := NAREntry{Name: string(k)}
			var r narRow
			if err := json.Unmarshal(v, &r); err != nil {
				e.Err = fmt.Errorf("decode NAR row: %w", err)
			}
			e.Size = r.Size
			if row := src.Get(k); row != nil {
				e.HasSource = true
				if err := json.Unmarshal(row, &e.Source); err != nil {
					e.Err = fmt.Errorf("decode NAR source row: %w", err)
				}
				if e.Source.NarHash == nil && e.Source.Hash != "" {
					fillFromNarInfo(&e.Source, tx.Bucket(bucketNarInfo).Get([]byte(e.Source.Hash)))
				}
			} else if up := tx.Bucket(bucketUploads); up != nil {
				// An upload waiting for its narinfo: what was measured
				// when it came in is what it must be.
				if row := up.Get(k); row != nil {
					var u Upload
					if err := json.Unmarshal(row, &u); err != nil {
						e.Err = fmt.Errorf("decode upload row: %w", err)
					}
					e.HasSource = true
					e.Source = NARSource{Upstream: UploadedUpstream, Size: u.FileSize, NarHash: u.NarHash, NarSize: u.NarSize, Compression: u.Compression}
				}
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// fillFromNarInfo sets NarHash, NarSize and Compression from the narinfo
// text, for source rows written before they were kept with a FileHash.
func fillFromNarInfo(src *NARSource, text []byte) {
	if text == nil {
		return
	}
	ni, err := narinfo.Parse(text)
	if err != nil || ni.NarHash == nil {
		return
	}
	src.NarHash, src.NarSize, src.Compression = ni.NarHash.Digest(), int64(ni.NarSize), ni.Compression
}

// OpenNARFile opens the NAR file called name without consulting the index;
// a missing file is an error wrapping fs.ErrNotExist.
func (s *Store) OpenNARFile(name string) (NARFile, error) {
	return s.files.Open(name)
}

// DropNAR removes a bad NAR file and its index row, keeping the narinfo and
// its source, so the next request fetches the NAR again. checked is the
// file as verify read it (nil when it was missing): a file committed since
// under the same name is left alone (ErrChanged), as is one being written
// (ErrBusy).
//
// The row goes first, in a short write transaction, then the file: from
// the moment the row is gone no client is served the bad file, and a crash
// in between leaves a file without a row, which verify removes. Holding
// the registry of writers throughout keeps a download from starting on the
// name and renaming its file into place before the old one is removed.
func (s *Store) DropNAR(ctx context.Context, name string, checked fs.FileInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if s.live.hasLocked(name) {
		return fmt.Errorf("%w: %s", ErrBusy, name)
	}
	if err := s.stillChecked(name, checked); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		n := s.narRows(tx)
		if n.get([]byte(name)) == nil || tx.Bucket(bucketEvicting).Get([]byte(name)) != nil {
			return fmt.Errorf("%w: %s is no longer indexed", ErrChanged, name)
		}
		if checked != nil {
			// Recorded like an eviction: a crash before the file is gone
			// is finished by the next Open (resumeEvictions).
			if err := tx.Bucket(bucketEvicting).Put([]byte(name), nil); err != nil {
				return err
			}
		}
		if _, _, err := n.delete([]byte(name)); err != nil {
			return err
		}
		return n.done()
	})
	if err != nil || checked == nil {
		return err
	}
	crashpoint.Hit("verify-row-dropped")
	if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("drop NAR %s: %w", name, err)
	}
	if err := syncRemoved(s.files, []string{name}); err != nil {
		return fmt.Errorf("drop NAR %s: %w", name, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvicting).Delete([]byte(name))
	})
}

// stillChecked returns nil if the NAR file name is still the file checked
// (or, with checked nil, still missing), else ErrChanged.
func (s *Store) stillChecked(name string, checked fs.FileInfo) error {
	f, err := s.files.Open(name)
	switch {
	case checked == nil && errors.Is(err, fs.ErrNotExist):
		return nil
	case checked == nil && err == nil:
		f.Close()
		return fmt.Errorf("%w: %s is there now", ErrChanged, name)
	case err != nil:
		return fmt.Errorf("%w: %w", ErrChanged, err)
	}
	now, err := f.Stat()
	f.Close()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrChanged, err)
	}
	if !os.SameFile(now, checked) {
		return fmt.Errorf("%w: %s was replaced", ErrChanged, name)
	}
	return nil
}

// Stray kinds: what a file that should not be there is.
const (
	StrayUnindexed = "unindexed" // a NAR file no index row names
	StrayUnknown   = "stray"     // a file in nar/ that is no NAR name, or in the wrong shard
	StrayTemp      = "temp"      // a temp file no download of this process is writing
)

// Stray is a file that should not be in the cache dir.
type Stray struct {
	Kind string
	Path string // relative to the cache dir, slash-separated
	Name string // the NAR name, for StrayUnindexed
	Size int64
	info fs.FileInfo
}

// Strays calls fn for every file that should not be in the cache dir: NAR
// files without an index row, other files under nar/, and temp files no
// download of this process is writing. It walks the local directory's
// layout (DirFiles); an object store would list its own leftovers. A file is looked up in the index
// only after it is found, so one committed during the walk is not a stray.
func (s *Store) Strays(ctx context.Context, validName func(string) bool, fn func(Stray) error) error {
	shards, err := os.ReadDir(filepath.Join(s.dir, "nar"))
	if err != nil {
		return fmt.Errorf("list NAR files: %w", err)
	}
	for _, sh := range shards {
		rel := "nar/" + sh.Name()
		if !sh.IsDir() {
			if err := s.strayFile(ctx, rel, sh, StrayUnknown, "", fn); err != nil {
				return err
			}
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.dir, rel))
		if err != nil {
			return fmt.Errorf("list NAR files: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := e.Name()
			if !validName(name) || name[:2] != sh.Name() || !e.Type().IsRegular() {
				if err := s.strayFile(ctx, rel+"/"+name, e, StrayUnknown, "", fn); err != nil {
					return err
				}
				continue
			}
			info, err := s.unindexedFile(name, filepath.Join(s.dir, rel, name))
			if err != nil {
				return err
			}
			if info == nil {
				continue
			}
			if err := fn(Stray{Kind: StrayUnindexed, Path: rel + "/" + name, Name: name, Size: info.Size(), info: info}); err != nil {
				return err
			}
		}
	}
	temps, err := os.ReadDir(filepath.Join(s.dir, "tmp"))
	if err != nil {
		return fmt.Errorf("list temp files: %w", err)
	}
	for _, e := range temps {
		if s.live.has(tempOwner(e.Name())) {
			continue
		}
		if err := s.strayFile(ctx, "tmp/"+e.Name(), e, StrayTemp, "", fn); err != nil {
			return err
		}
	}
	return nil
}

// unindexedFile returns the NAR file name (at path) as it is now if no
// index row names it and nothing in this process is writing or removing
// it, else nil (nil too if it is gone). Most files found have their row: one look
// at the index tells. A file without one is looked at again with the
// registry of writers held (no writer starts on the name meanwhile), each
// thing in the order that leaves no gap between them: a writer is
// registered until its row is in; an eviction marks its names in
// s.removing before its rows' deletion commits and unmarks them once the
// files are removed (DeletePath and DropNAR record them in the same
// transaction, and hold the registry until the files are gone); the file
// is looked at last.
func (s *Store) unindexedFile(name, path string) (fs.FileInfo, error) {
	indexed := func() (bool, error) {
		var ok bool
		err := s.db.View(func(tx *bolt.Tx) error {
			ok = tx.Bucket(bucketNAR).Get([]byte(name)) != nil || tx.Bucket(bucketEvicting).Get([]byte(name)) != nil
			return nil
		})
		return ok, err
	}
	if ok, err := indexed(); ok || err != nil {
		return nil, err
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if s.live.hasLocked(name) {
		return nil, nil // renamed into place, its row about to be written
	}
	if ok, err := indexed(); ok || err != nil {
		return nil, err
	}
	s.rmMu.Lock()
	evicting := s.removing[name]
	s.rmMu.Unlock()
	if evicting {
		return nil, nil
	}
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil // removed meanwhile
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return info, nil
}

func (s *Store) strayFile(ctx context.Context, rel string, e fs.DirEntry, kind, name string, fn func(Stray) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := e.Info()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // gone meanwhile
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	return fn(Stray{Kind: kind, Path: rel, Name: name, Size: info.Size(), info: info})
}

// RemoveStray deletes a stray file found by Strays, unless it stopped
// being one (indexed or being written since: ErrChanged, ErrBusy).
func (s *Store) RemoveStray(ctx context.Context, st Stray) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path := filepath.Join(s.dir, filepath.FromSlash(st.Path))
	// While the registry is held no writer starts, and none is between
	// its rename and its index row unless it is listed.
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	switch st.Kind {
	case StrayTemp:
		if s.live.hasLocked(tempOwner(filepath.Base(path))) {
			return fmt.Errorf("%w: %s", ErrBusy, st.Path)
		}
	case StrayUnindexed:
		if s.live.hasLocked(st.Name) {
			return fmt.Errorf("%w: %s", ErrBusy, st.Name)
		}
		if _, err := s.get(ctx, bucketNAR, st.Name); !errors.Is(err, ErrNotFound) {
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: %s is indexed now", ErrChanged, st.Name)
		}
		if err := s.stillChecked(st.Name, st.info); err != nil {
			return err
		}
		if err := s.files.Remove(st.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", st.Path, err)
		}
		return nil
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", st.Path, err)
	}
	return nil
}

// CheckIndex runs bbolt's own consistency check (page and freelist
// structure) and compares the rows derived from the NAR rows with them
// (the age order and the totals: faults wrapping ErrDerived, which
// RebuildNAROrder mends), and returns every fault it finds. bbolt's check is only
// right inside a write transaction (it reads the live freelist), and a
// write transaction as long as a walk of every page would hold up every
// download's commit; so the index is copied, from one read transaction
// that blocks no one, to a temp file, and the copy is checked. The copy
// takes as much space in tmp/ as the index, for as long as the check runs.
func (s *Store) CheckIndex(ctx context.Context) ([]error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	const owner = "index-check" // so verify does not call the copy a stray
	s.live.add(owner)
	defer s.live.done(owner)
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), owner+".*")
	if err != nil {
		return nil, fmt.Errorf("copy index: %w", err)
	}
	defer os.Remove(f.Name())
	err = s.db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("copy index: %w", err)
	}
	snap, err := bolt.Open(f.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		// A copy bbolt cannot even open is a fault of the index.
		return []error{err}, nil
	}
	defer snap.Close()
	var faults []error
	err = snap.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			faults = append(faults, e)
		}
		if len(faults) > 0 {
			return nil // the pages themselves are bad: nothing to compare
		}
		faults = append(faults, checkNARDerived(tx)...)
		return nil
	})
	return faults, err
}

// NARIndexed reports whether the index has a row for the NAR called name
// that no eviction is removing (eviction removes the file before the row).
func (s *Store) NARIndexed(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketNAR).Get([]byte(name)) != nil && tx.Bucket(bucketEvicting).Get([]byte(name)) == nil
		return nil
	})
	return ok, err
}
