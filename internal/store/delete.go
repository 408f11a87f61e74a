package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrPinned means a path cannot be deleted while it is pinned.
var ErrPinned = errors.New("store: path is pinned")

// Deleted is a store path DeletePath removed.
type Deleted struct {
	Hash      string `json:"hash"`
	StorePath string `json:"store_path"`
	// NARs are the NAR files removed with it: the one its narinfo names
	// and, for a recompressed NAR, the one it was made from, if on disk.
	NARs  []string `json:"nars"`
	Bytes int64    `json:"bytes"` // of those files
	// Uploaded: it had no upstream, so it is gone for good.
	Uploaded bool `json:"uploaded"`
}

// DeletePath removes the store path hash from the index and the disk: its
// narinfo (a client that still holds it gets 404 for it and its NAR), its
// serving day and .ls listing, the NAR source rows that are its own, and
// its NAR files with their rows. A NAR another narinfo names stays. It
// returns ErrNotFound when no narinfo is stored for hash, ErrPinned for a
// pinned path, ErrBusy while its NAR is being written. What references it
// is the caller's to check.
//
// Everything but the files goes in one transaction, with the NAR names
// recorded as being evicted: a crash before the files are gone is
// finished by the next Open (resumeEvictions). Holding the registry of
// writers throughout keeps a download from committing a new file under
// one of the names before the old one is removed (as DropNAR).
func (s *Store) DeletePath(ctx context.Context, hash string) (Deleted, error) {
	d := Deleted{Hash: hash}
	if err := ctx.Err(); err != nil {
		return d, err
	}
	if s.shared != nil {
		return d, errors.New("store: deleting a path is not supported with shared storage (--storage)")
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		d.NARs, d.Bytes = nil, 0
		if tx.Bucket(bucketPins).Get([]byte(hash)) != nil {
			return fmt.Errorf("%w: %s", ErrPinned, hash)
		}
		text := tx.Bucket(bucketNarInfo).Get([]byte(hash))
		if text == nil {
			return fmt.Errorf("narinfo %s: %w", hash, ErrNotFound)
		}
		d.StorePath = storePathOfText(text)
		nar := strings.Clone(narOfText(text)) // text is the index's memory
		srcs := tx.Bucket(bucketNARSource)
		var names []string
		if nar != "" {
			names = append(names, nar)
			if src, err := decodeSource(nar, srcs.Get([]byte(nar))); err == nil {
				d.Uploaded = !src.Refillable()
				if src.From != "" {
					names = append(names, src.From)
				}
			}
		}
		for _, name := range names {
			if s.live.hasLocked(name) {
				return fmt.Errorf("%w: %s", ErrBusy, name)
			}
		}
		for _, b := range []struct {
			bucket []byte
			key    string
		}{{bucketNarInfo, hash}, {bucketServed, hash}, {bucketAux, hash + ".ls"}} {
			if err := tx.Bucket(b.bucket).Delete([]byte(b.key)); err != nil {
				return err
			}
		}
		if err := s.addNarInfos(tx, -1); err != nil {
			return err
		}
		n, ev := s.narRows(tx), tx.Bucket(bucketEvicting)
		for _, name := range names {
			if v := srcs.Get([]byte(name)); v != nil {
				if src, err := decodeSource(name, v); err == nil && src.Hash != "" && src.Hash != hash {
					continue // another narinfo's NAR
				}
				if err := srcs.Delete([]byte(name)); err != nil {
					return err
				}
			}
			size, found, err := n.delete([]byte(name))
			if err != nil {
				return err
			}
			if !found {
				continue
			}
			if err := ev.Put([]byte(name), nil); err != nil {
				return err
			}
			d.NARs, d.Bytes = append(d.NARs, name), d.Bytes+size
		}
		if err := n.done(); err != nil {
			return err
		}
		tx.OnCommit(func() { s.hot.delete(hash) })
		return nil
	})
	if err != nil {
		return d, err
	}
	var errs []error
	for _, name := range d.NARs {
		if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove NAR %s: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return d, errors.Join(errs...) // the next Open removes them
	}
	// The records go only once the removals are durable (see schema.go).
	if err := syncRemoved(s.files, d.NARs); err != nil {
		return d, err
	}
	return d, s.db.Update(func(tx *bolt.Tx) error {
		ev := tx.Bucket(bucketEvicting)
		for _, name := range d.NARs {
			if err := ev.Delete([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// storePathOfText is a stored narinfo's StorePath, or "".
func storePathOfText(text []byte) string {
	for line := range bytes.Lines(text) {
		if v, ok := bytes.CutPrefix(line, []byte("StorePath: ")); ok {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}
