package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// Shared is the part of the cache that other proxies on the same storage
// see (an S3 bucket): where each NAR comes from, and the narinfos of NARs
// already stored. The bbolt index stays this node's own: what it knows
// exists. Every method's "not there" is an error wrapping fs.ErrNotExist.
type Shared interface {
	// PutSource records where the NAR name comes from, before any node
	// fetches it, so a node that never saw its narinfo can still fill it.
	PutSource(ctx context.Context, name string, src NARSource) error
	// Source returns what PutSource recorded.
	Source(ctx context.Context, name string) (NARSource, error)
	// PublishNarInfo makes hash's narinfo visible to every node. It is
	// called only once the NAR it names is stored.
	PublishNarInfo(ctx context.Context, hash string, text []byte) error
	// NarInfo returns a published narinfo.
	NarInfo(ctx context.Context, hash string) ([]byte, error)
	// PutPin records a pin where the node evicting for all of them sees
	// it; DeletePin drops it.
	PutPin(ctx context.Context, p Pin) error
	DeletePin(ctx context.Context, hash string) error
}

// SharedNarInfo looks hash up in the shared storage, for a node whose own
// index does not have it: another node stored it. What it finds is
// indexed here, so the next lookup is a local hit. It returns ErrNotFound
// when the storage is not shared or has no such narinfo.
func (s *Store) SharedNarInfo(ctx context.Context, hash string) ([]byte, error) {
	if s.shared == nil {
		return nil, ErrNotFound
	}
	text, err := s.shared.NarInfo(ctx, hash)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("shared narinfo %s: %w", hash, err)
	}
	name, ok := strings.CutPrefix(ni.URL, "nar/")
	if !ok || !narinfo.ValidNARName(name) {
		return nil, fmt.Errorf("shared narinfo %s: URL %q is not nar/<name>", hash, ni.URL)
	}
	src, err := s.NARSource(ctx, name)
	if errors.Is(err, ErrNotFound) {
		// Published without a source: keep it as the only copy there is.
		src, err = NARSource{Hash: hash, StorePath: ni.StorePath, Upstream: UploadedUpstream}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.indexNarInfo(ctx, hash, text, name, src); err != nil {
		return nil, err
	}
	return s.NarInfo(ctx, hash)
}

// publish makes the narinfos naming the NAR name visible to other nodes,
// once the NAR is stored: the one its source was recorded for.
func (s *Store) publish(ctx context.Context, name string) error {
	if s.shared == nil {
		return nil
	}
	row, err := s.get(ctx, bucketNARSource, name)
	if errors.Is(err, ErrNotFound) {
		return nil // an upload: published when a narinfo claims it
	}
	if err != nil {
		return err
	}
	src, err := decodeSource(name, row)
	if err != nil || src.Hash == "" {
		return err
	}
	text, err := s.get(ctx, bucketNarInfo, src.Hash)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.shared.PublishNarInfo(ctx, src.Hash, text)
}

// openShared opens a NAR another node stored, for a node whose index has
// no row for it, and indexes it. ErrNotFound if the storage is not shared
// or has no such NAR.
func (s *Store) openShared(ctx context.Context, name string) (NARFile, error) {
	if s.shared == nil {
		return nil, ErrNotFound
	}
	f, err := s.files.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open NAR %s: %w", name, err)
	}
	st, err := f.Stat()
	if err == nil {
		err = s.indexNAR(ctx, name, st.Size())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
