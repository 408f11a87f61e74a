package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// An evicted zstd file (a source row with From) is rebuilt from its
// original and streamed to its clients as it is written, like a download:
// its flight's fill (rebuildToStore) reads the original, from disk or
// following its own download from the upstream, instead of an upstream.
// The clients hold a narinfo naming the file with the FileHash and
// FileSize of the first one; the recompression is deterministic
// (recompress.Transcode), so the rebuilt file is the same bytes, and the
// last byte is held back until it is checked against FileHash, as for any
// download.

// rebuildToStore is fetchToStore for the zstd file fl.name, made from
// src.From. It returns the bytes written.
func (c *Cache) rebuildToStore(ctx context.Context, fl *flight, src store.NARSource) (int64, error) {
	if f, err := c.store.OpenNAR(ctx, fl.name); err == nil {
		return 0, f.Close()
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	ni, err := c.storedNarInfo(ctx, src.Hash)
	if err != nil {
		return 0, err
	}
	if ni.URL != "nar/"+fl.name || ni.NarHash == nil {
		// The narinfo moved on (another NarHash): this name is not made.
		return 0, fmt.Errorf("%w: NAR %s is no longer made from %s", ErrNotFound, fl.name, src.From)
	}
	compression, ok := compressionOf(src.From)
	if !ok {
		return 0, fmt.Errorf("zstd NAR %s: original %s has no known compression", fl.name, src.From)
	}
	orig, refilled, err := c.openOriginal(ctx, src.From)
	if err != nil {
		return 0, fmt.Errorf("original %s of %s: %w", src.From, fl.name, err)
	}
	defer orig.Close()
	// Never errNotKept: its clients would relay the rest from an upstream,
	// which has only the original.
	_, release, err := c.room.Reserve(ctx, src.Size)
	if err != nil {
		return 0, fmt.Errorf("no room to rebuild %s: %w", fl.name, err)
	}
	var kept bool
	var writeErr error
	defer func() { release(kept, writeErr) }()
	wr, err := c.store.CreateNAR(ctx, fl.name)
	if err != nil {
		writeErr = err
		return 0, fmt.Errorf("rebuild %s: %w", fl.name, err)
	}
	defer wr.Cancel()
	size := src.Size
	if size <= 0 {
		size = -1
	}
	fl.start(wr, size)
	start := time.Now()
	res, err := c.transcodeCounted(ctx, &publishing{w: wr, fl: fl}, orig, compression, ni)
	if err != nil {
		return res.Out, err
	}
	same := res.Out == src.Size && bytes.Equal(res.SHA256, src.SHA256)
	if err := wr.Commit(ctx); err != nil {
		writeErr = err
		return res.Out, err
	}
	kept = true
	c.log.Info("recompress", "nar", src.From, "to", fl.name, "store_path", ni.StorePath, "in", res.In, "out", res.Out,
		"duration", time.Since(start).Round(time.Millisecond), "outcome", "rebuilt")
	if refilled {
		c.dropOriginal(src.From)
	}
	if !same {
		// Not the bytes the narinfo promised (the encoder changed with an
		// upgrade): the NAR inside was checked, so the file is kept and
		// described anew; the clients it was streamed to are cut (their
		// Content-Length was the old one), and come back to the new one.
		osrc := store.NARSource{Upstream: src.Upstream, Seen: src.Seen}
		if err := c.pointAt(ctx, src.Hash, ni, fl.name, src.From, osrc, res); err != nil {
			return res.Out, err
		}
		return res.Out, verifyFailed("hash", "rebuilt %s is not its FileHash: the narinfo now names the new file", fl.name)
	}
	return res.Out, nil
}

// publishing writes to w and tells fl's followers as bytes land.
type publishing struct {
	w  io.Writer
	fl *flight
}

func (p *publishing) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.fl.progress(int64(n))
	return n, err
}

// openOriginal opens the original file name to read it from its start:
// the stored file, or, evicted, its download from the upstream followed as
// it lands (refilled true).
func (c *Cache) openOriginal(ctx context.Context, name string) (io.ReadCloser, bool, error) {
	f, err := c.store.OpenNAR(ctx, name)
	if err == nil {
		return f, false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	src, err := c.store.NARSource(ctx, name)
	if err != nil {
		return nil, false, err
	}
	if src.From != "" {
		return nil, false, fmt.Errorf("original %s is itself made from %s", name, src.From)
	}
	return &flightReader{c: c, ctx: ctx, fl: c.join(ctx, name, src)}, true, nil
}

// flightReader reads a flight's NAR from its start as it lands, to its
// end once stored. Close leaves the flight.
type flightReader struct {
	c   *Cache
	ctx context.Context
	fl  *flight
	f   store.NARFile
	off int64
}

func (r *flightReader) Read(p []byte) (int, error) {
	for {
		v := r.fl.view()
		switch v.state {
		case notKept, failed:
			return 0, fmt.Errorf("download of %s: %w", r.fl.name, v.err)
		case streaming, verified, stored:
			if r.f == nil {
				if err := r.open(v); err != nil {
					return 0, err
				}
			}
			if r.f != nil && (v.state == stored || r.off < v.written) {
				if v.state != stored {
					p = p[:min(int64(len(p)), v.written-r.off)]
				}
				n, err := r.f.Read(p)
				r.off += int64(n)
				if n > 0 || v.state == stored {
					return n, err
				}
			}
		}
		select {
		case <-v.changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// open opens the part file, or the stored file once committed, at off.
func (r *flightReader) open(v flightView) error {
	var f store.NARFile
	var err error
	if v.state == stored || v.part == nil {
		f, err = r.c.store.OpenNAR(r.ctx, r.fl.name)
	} else if f, err = v.part.OpenPartial(); errors.Is(err, fs.ErrNotExist) {
		return nil // committed or discarded just now: the next view says which
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", r.fl.name, err)
	}
	if _, err := f.Seek(r.off, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	r.f = f
	return nil
}

func (r *flightReader) Close() error {
	if r.f != nil {
		r.f.Close()
	}
	r.c.leave(r.fl)
	return nil
}
