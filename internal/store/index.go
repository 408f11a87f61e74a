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

// NARSource says where a NAR not yet on disk can be fetched, and what the
// fetched file must be for it to be kept.
type NARSource struct {
	Hash      string `json:"hash,omitempty"`       // store path hash of the narinfo that named it
	StorePath string `json:"store_path,omitempty"` // and its store path
	Upstream  string `json:"upstream"`             // the upstream's identity (its base URL)
	URL       string `json:"url"`                  // absolute URL of the file there
	Size      int64  `json:"size,omitempty"`       // FileSize; 0 when unknown
	SHA256    []byte `json:"sha256,omitempty"`     // FileHash digest; nil when unknown
	// NarHash and NarSize describe the uncompressed NAR. Without SHA256 they
	// are what a download is checked against: directly when Compression is
	// "none", after decompressing when it is "zstd". `verify --deep` checks
	// them always. Rows written before they were kept with a FileHash lack
	// them; NAREntries then reads them from the narinfo.
	NarHash     []byte `json:"nar_hash,omitempty"`
	NarSize     int64  `json:"nar_size,omitempty"`
	Compression string `json:"compression,omitempty"`
	// From, when set, names the NAR file this one is made from by
	// recompressing it (internal/recompress): it is refilled by bringing
	// that one back and recompressing it again, not from URL. SHA256 and
	// Size are then this file's own.
	From string `json:"from,omitempty"`
	// Seen is when a narinfo naming this NAR was first stored; PutNarInfo
	// sets it and keeps it. Zero in rows from before it was recorded.
	Seen time.Time `json:"seen,omitzero"`
}

// NarInfo returns the narinfo text served for hash, or ErrNotFound.
// The text is shared: callers must not modify it.
// Each read stamps the narinfo as served today (in memory; see servedLog).
func (s *Store) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	if e, ok := s.hot.get(hash); ok {
		s.stampServed(hash, e)
		return e.text, nil
	}
	text, err := s.get(ctx, bucketNarInfo, hash)
	if err == nil {
		if s.present != nil {
			text = s.present(text)
		}
		today := s.servedDays.today.Load()
		s.servedDays.mark(hash, today)
		s.hot.put(hash, text, today)
	}
	return text, err
}

// ReadNarInfo is NarInfo for the proxy's own walks (closures for eviction):
// it does not fill the hot set, which is for clients' hits.
func (s *Store) ReadNarInfo(ctx context.Context, hash string) ([]byte, error) {
	if e, ok := s.hot.get(hash); ok {
		return e.text, nil
	}
	return s.get(ctx, bucketNarInfo, hash)
}

// PutNarInfo records the narinfo text served for hash and, in the same
// transaction, where its NAR (named narName) comes from. With shared
// storage the source is recorded there first, and the narinfo published
// at once if the NAR is already stored.
func (s *Store) PutNarInfo(ctx context.Context, hash string, text []byte, narName string, src NARSource) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if src.Seen.IsZero() {
		src.Seen = time.Now().UTC()
	}
	if s.shared != nil {
		if err := s.shared.PutSource(ctx, narName, src); err != nil {
			return err
		}
	}
	if err := s.indexNarInfo(ctx, hash, text, narName, src); err != nil {
		return err
	}
	if s.shared == nil {
		return nil
	}
	if _, err := s.get(ctx, bucketNAR, narName); err != nil {
		return nil // published when the NAR is stored
	}
	return s.shared.PublishNarInfo(ctx, hash, text)
}

// indexNarInfo is PutNarInfo in this node's index alone.
func (s *Store) indexNarInfo(ctx context.Context, hash string, text []byte, narName string, src NARSource) error {
	text = slices.Clone(text) // the hot set shares it with readers
	today := s.servedDays.tick(s.now())
	// Its references count as served too: a narinfo stored now must not
	// lose them to a prune that chose them just before (see PruneNarInfos).
	for ref := range refHashes(text, hash) {
		s.servedDays.mark(ref, today)
	}
	return s.writes.update(func(tx *bolt.Tx) error {
		if err := s.putNarInfo(tx, hash, text); err != nil {
			return err
		}
		if err := tx.Bucket(bucketServed).Put([]byte(hash), putDay(today)); err != nil {
			return fmt.Errorf("index narinfo %s: %w", hash, err)
		}
		tx.OnCommit(func() { s.hot.put(hash, text, today) })
		if old := tx.Bucket(bucketNARSource).Get([]byte(narName)); old != nil {
			var prev NARSource
			if json.Unmarshal(old, &prev) == nil && !prev.Seen.IsZero() && prev.Seen.Before(src.Seen) {
				src.Seen = prev.Seen // first seen stays first
			}
		}
		row, err := json.Marshal(src)
		if err != nil {
			return fmt.Errorf("encode NAR source: %w", err)
		}
		return s.putSource(tx, narName, row)
	})
}

// NARSource returns where the NAR named name comes from, or ErrNotFound.
// With shared storage, a source this node's index lacks is looked up
// there (another node saw the narinfo) and indexed.
func (s *Store) NARSource(ctx context.Context, name string) (NARSource, error) {
	row, err := s.get(ctx, bucketNARSource, name)
	if errors.Is(err, ErrNotFound) && s.shared != nil {
		return s.sharedSource(ctx, name)
	}
	if err != nil {
		return NARSource{}, err
	}
	return decodeSource(name, row)
}

func decodeSource(name string, row []byte) (NARSource, error) {
	var src NARSource
	if err := json.Unmarshal(row, &src); err != nil {
		return src, fmt.Errorf("decode NAR source %s: %w", name, err)
	}
	return src, nil
}

func (s *Store) sharedSource(ctx context.Context, name string) (NARSource, error) {
	src, err := s.shared.Source(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return src, ErrNotFound
	}
	if err != nil {
		return src, err
	}
	row, err := json.Marshal(src)
	if err != nil {
		return src, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error { return s.putSource(tx, name, row) })
	return src, err
}

// Aux returns a cached .ls listing or build log by its key ("<hash>.ls",
// "log/<name>"), or ErrNotFound.
func (s *Store) Aux(ctx context.Context, key string) ([]byte, error) {
	return s.get(ctx, bucketAux, key)
}

// PutAux caches a .ls listing or build log.
func (s *Store) PutAux(ctx context.Context, key string, body []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.writes.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAux).Put([]byte(key), body)
	})
}

func (s *Store) get(ctx context.Context, bucket []byte, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		// bbolt's memory is only valid inside the transaction.
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}
