package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"time"

	bolt "go.etcd.io/bbolt"
)

// NarInfoUse is a narinfo as pruning sees it. Its strings are views of the
// index's memory, valid only during the walk's callback: copy what you keep.
type NarInfoUse struct {
	Hash string
	NAR  string   // the NAR file its URL names; "" if it names none
	Refs []string // hash parts of its references, itself left out
	// Stale: its NAR (and the one that was recompressed into it) is not on
	// disk nor being written, it has an upstream to refill from, it is not
	// pinned, and it was last served or stored on a day that ended before
	// the cutoff. Computed only when the walk is given a cutoff.
	Stale bool
	// Bytes is what its rows hold: the narinfo's text and, when Stale,
	// its NAR's origin record (what pruning it deletes, about).
	Bytes int
}

// unmapEvery is how many rows a long walk reads between drops of the index
// pages it mapped (unmapIndexPagesIn): ~20 MiB of narinfo pages.
const unmapEvery = 16384

// WalkNarInfoUse calls fn for every narinfo in the index, in one read
// transaction (readers never wait on it). With a zero cutoff, Stale is
// not computed, which is cheaper.
func (s *Store) WalkNarInfoUse(ctx context.Context, cutoff time.Time, fn func(*NarInfoUse) error) error {
	defer s.unmapIndexPages() // a walk of a million narinfos maps ~1.3 GiB
	return s.db.View(func(tx *bolt.Tx) error {
		since := getDay(tx.Bucket(bucketMeta).Get(keyServedSince))
		var u NarInfoUse
		n := 0
		return tx.Bucket(bucketNarInfo).ForEach(func(k, text []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if n%unmapEvery == 0 {
					s.unmapIndexPagesIn(tx)
				}
			}
			u = NarInfoUse{Hash: unsafeString(k), NAR: narOfText(text), Refs: u.Refs[:0], Bytes: len(k) + len(text)}
			for ref := range refHashes(text, u.Hash) {
				u.Refs = append(u.Refs, ref)
			}
			if !cutoff.IsZero() {
				src, err := s.stale(tx, u.Hash, u.NAR, cutoff, since)
				if u.Stale = err == nil; u.Stale {
					u.Bytes += len(u.NAR) + src
				}
			}
			return fn(&u)
		})
	})
}

// PruneNarInfos deletes, in one transaction and in the order given, the
// narinfos named with their serving day, their .ls listing and their NAR
// source rows (unless keep says another narinfo still names that NAR), each
// only if it is still stale as of cutoff (see NarInfoUse). It stops at the
// first one that is no longer stale (served, pinned or refilled since it
// was chosen), since what it references may be needed again: order
// referrers before what they reference. It returns how many it deleted and
// whether it went through them all.
func (s *Store) PruneNarInfos(ctx context.Context, hashes []string, cutoff time.Time, keep func(nar string) bool) (pruned int, all bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		pruned, all = 0, true
		since := getDay(tx.Bucket(bucketMeta).Get(keyServedSince))
		nis, srcs := tx.Bucket(bucketNarInfo), tx.Bucket(bucketNARSource)
		var gone []string
		for _, hash := range hashes {
			text := nis.Get([]byte(hash))
			if text == nil {
				continue // pruned already
			}
			nar := narOfText(text)
			if _, err := s.stale(tx, hash, nar, cutoff, since); err != nil {
				all = false
				break
			}
			src, _ := decodeSource(nar, srcs.Get([]byte(nar))) // stale read it already
			for _, del := range []struct {
				b   []byte
				key string
			}{{bucketNarInfo, hash}, {bucketServed, hash}, {bucketAux, hash + ".ls"}} {
				if err := tx.Bucket(del.b).Delete([]byte(del.key)); err != nil {
					return err
				}
			}
			for _, name := range []string{nar, src.From} {
				if name == "" || keep(name) || tx.Bucket(bucketNAR).Get([]byte(name)) != nil {
					continue
				}
				if row, err := decodeSource(name, srcs.Get([]byte(name))); err != nil || row.Hash != hash {
					continue // another narinfo's (or unreadable: leave it)
				}
				if err := srcs.Delete([]byte(name)); err != nil {
					return err
				}
				// No NAR row to keep a copy in (checked above).
			}
			gone = append(gone, hash)
		}
		pruned = len(gone)
		if err := s.addNarInfos(tx, -int64(pruned)); err != nil {
			return err
		}
		tx.OnCommit(func() {
			for _, h := range gone {
				s.hot.delete(h)
			}
		})
		return nil
	})
	return pruned, all, err
}

// errFresh says why a narinfo is not stale; pruning only needs "no".
var errFresh = fmt.Errorf("store: narinfo still in use")

// stale is nil when the narinfo hash (whose NAR is nar) may be pruned as
// of cutoff: see NarInfoUse.Stale. since is the index's served-since day.
// srcLen is the length of the NAR's origin record, read on the way.
func (s *Store) stale(tx *bolt.Tx, hash, nar string, cutoff time.Time, since uint32) (srcLen int, err error) {
	if nar == "" || tx.Bucket(bucketPins).Get([]byte(hash)) != nil {
		return 0, errFresh
	}
	day := max(getDay(tx.Bucket(bucketServed).Get([]byte(hash))), since, s.servedDays.get(hash))
	if e, ok := s.hot.get(hash); ok {
		day = max(day, e.served.Load())
	}
	if dayEnd(day).After(cutoff) {
		return 0, errFresh
	}
	nars := tx.Bucket(bucketNAR)
	if nars.Get([]byte(nar)) != nil || s.live.has(nar) {
		return 0, errFresh
	}
	v := tx.Bucket(bucketNARSource).Get([]byte(nar))
	if v == nil {
		return 0, errFresh // no origin known: nothing says it can come back
	}
	refill, ok := fastRefillable(v)
	var from string
	if ok {
		from, ok = fastFrom(v)
	}
	if !ok {
		var src NARSource
		if err := json.Unmarshal(v, &src); err != nil {
			return 0, errFresh
		}
		refill, from = src.Refillable(), src.From
	}
	if !refill || from != "" && (nars.Get([]byte(from)) != nil || s.live.has(from)) {
		return 0, errFresh
	}
	return len(v), nil
}

// fastFrom is a source row's From read without decoding the row (as
// fastRefillable): "" when the row has none. ok is false when the row is
// not laid out as expected; decode it then.
func fastFrom(row []byte) (from string, ok bool) {
	const key = `"from":"`
	i := bytes.Index(row, []byte(key))
	if i < 0 {
		return "", true // omitempty: no From
	}
	rest := row[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return "", false
	}
	return unsafeString(rest[:j]), true
}

// narOfText is the NAR file a stored narinfo's URL names ("nar/<name>"),
// or "" (a view of text).
func narOfText(text []byte) string {
	for line := range bytes.Lines(text) {
		if v, ok := bytes.CutPrefix(line, []byte("URL: nar/")); ok {
			return unsafeString(bytes.TrimSpace(v))
		}
	}
	return ""
}

// refHashes yields the hash parts of a narinfo text's references, self
// left out, as views of text: it reads only the References line.
func refHashes(text []byte, self string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for line := range bytes.Lines(text) {
			v, ok := bytes.CutPrefix(line, []byte("References:"))
			if !ok {
				continue
			}
			for ref := range bytes.FieldsSeq(v) {
				if len(ref) < 32 {
					continue
				}
				if h := unsafeString(ref[:32]); h != self && !yield(h) {
					return
				}
			}
			return
		}
	}
}
