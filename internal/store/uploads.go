package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketUploads holds NAR files received by upload that no narinfo names
// yet. Nix uploads a NAR before its narinfo; a NAR whose narinfo never comes
// is dropped after a while (DropUnclaimedUpload).
var bucketUploads = []byte("uploads")

// Upload is what the proxy measured of an uploaded NAR file: the facts a
// narinfo that claims it must state.
type Upload struct {
	Compression string    `json:"compression"`
	FileSize    int64     `json:"file_size"`
	NarHash     []byte    `json:"nar_hash"`
	NarSize     int64     `json:"nar_size"`
	Received    time.Time `json:"received"`
}

// UploadedUpstream is the NARSource.Upstream of a path that was uploaded:
// it has no upstream to be fetched again from, so it is never dropped to
// make room (see NARSource.Refillable).
const UploadedUpstream = ""

// Refillable reports whether the NAR can be fetched again after its file is
// dropped: only a NAR that came from an upstream can. Eviction may drop
// only refillable NARs; an uploaded one is the only copy there is.
func (src NARSource) Refillable() bool { return src.Upstream != UploadedUpstream }

// PutUpload records an uploaded NAR file, already committed under name, as
// waiting for its narinfo.
func (s *Store) PutUpload(ctx context.Context, name string, u Upload) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	row, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketUploads)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), row)
	})
}

// UploadOf returns what was measured of the uploaded NAR name while it
// waits for its narinfo, or ErrNotFound.
func (s *Store) UploadOf(ctx context.Context, name string) (Upload, error) {
	var u Upload
	if err := ctx.Err(); err != nil {
		return u, err
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil {
			return ErrNotFound
		}
		row := b.Get([]byte(name))
		if row == nil {
			return ErrNotFound
		}
		return json.Unmarshal(row, &u)
	})
	return u, err
}

// ClaimUpload publishes an uploaded path: its narinfo text and the NAR's
// source (Upstream UploadedUpstream), and ends the NAR's wait, all in one
// transaction, so a crash leaves either the waiting NAR or the whole entry.
//
// With shared storage the source is recorded there first and the narinfo
// published last, so other nodes see the path only once it is whole here.
func (s *Store) ClaimUpload(ctx context.Context, hash string, text []byte, narName string, src NARSource) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if src.Seen.IsZero() {
		// The upload time: --keep-latest keeps the newest uploads by it.
		src.Seen = s.now().UTC()
	}
	if s.shared != nil {
		if err := s.shared.PutSource(ctx, narName, src); err != nil {
			return err
		}
	}
	if err := s.claimUpload(ctx, hash, text, narName, src); err != nil {
		return err
	}
	if s.shared == nil {
		return nil
	}
	return s.shared.PublishNarInfo(ctx, hash, text)
}

func (s *Store) claimUpload(ctx context.Context, hash string, text []byte, narName string, src NARSource) error {
	row, err := json.Marshal(src)
	if err != nil {
		return fmt.Errorf("encode NAR source: %w", err)
	}
	text = slices.Clone(text)
	today := s.servedDays.tick(s.now())
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNAR).Get([]byte(narName)) == nil {
			return fmt.Errorf("claim upload %s: NAR %s: %w", hash, narName, ErrNotFound)
		}
		if err := s.putNarInfo(tx, hash, text); err != nil {
			return err
		}
		if err := tx.Bucket(bucketServed).Put([]byte(hash), putDay(today)); err != nil {
			return fmt.Errorf("index narinfo %s: %w", hash, err)
		}
		if err := s.putSource(tx, narName, row); err != nil {
			return err
		}
		if b := tx.Bucket(bucketUploads); b != nil {
			if err := b.Delete([]byte(narName)); err != nil {
				return err
			}
		}
		tx.OnCommit(func() { s.hot.put(hash, text, today) })
		return nil
	})
}

// UnclaimedUploads lists the uploaded NARs still waiting for a narinfo that
// were received before t.
func (s *Store) UnclaimedUploads(ctx context.Context, before time.Time) ([]string, error) {
	var names []string
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var u Upload
			if json.Unmarshal(v, &u) != nil || u.Received.Before(before) {
				names = append(names, string(k))
			}
			return nil
		})
	})
	return names, err
}

// DropUnclaimedUpload deletes an uploaded NAR that no narinfo claimed: its
// waiting row, its index row and its file. A NAR that a narinfo claimed
// meanwhile, or that a narinfo from an upstream names, is left alone.
func (s *Store) DropUnclaimedUpload(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	drop := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil || b.Get([]byte(name)) == nil {
			return nil
		}
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		if tx.Bucket(bucketNARSource).Get([]byte(name)) != nil {
			return nil // named by a narinfo after all: keep the file
		}
		n := s.narRows(tx)
		_, found, err := n.delete([]byte(name))
		if err != nil {
			return err
		}
		drop = found
		return n.done()
	})
	if err != nil || !drop {
		return err
	}
	if s.shared != nil {
		// Another node may have had the same NAR claimed: with shared
		// storage the file is theirs too.
		if _, err := s.shared.Source(ctx, name); err == nil {
			return nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove unclaimed upload %s: %w", name, err)
		}
	}
	// The row is gone first: a crash here leaves a file without a row,
	// which verify reports and repairs, never a row without its file.
	if err := s.files.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove unclaimed upload %s: %w", name, err)
	}
	return nil
}
