// Package recompress turns a NAR file kept in a slow-to-unpack compression
// (xz, bzip2) or none at all into zstd, checking the NAR inside against the
// narinfo's NarHash and NarSize on the way: a file whose NAR is not the one
// promised is never written out as good.
package recompress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
)

// ErrMismatch means the NAR inside the file is not the one its narinfo
// names (NarHash or NarSize differ, or the file does not decode).
var ErrMismatch = errors.New("recompress: NAR does not match its narinfo")

// MinNAR is the NarSize from which a NAR is recompressed, whatever its
// compression: below it the client's time saved does not pay for a second
// file, a second index row and a transcode (a 176-byte xz NAR unpacks in
// no time either way).
const MinNAR = 64 << 10

// Eligible reports whether a NAR file compressed as compression, holding a
// NAR of narSize bytes, is recompressed to zstd.
func Eligible(compression string, narSize int64) bool {
	switch compression {
	case "xz", "bzip2", "none":
		return narSize >= MinNAR
	}
	return false
}

// Room is the disk room to hold for the zstd file Transcode makes of a NAR
// of narSize bytes kept as fileSize bytes compressed as compression, before
// it is written: at least what it will take, so the disk bound makes room
// for it first rather than finding it over the bound once written. zstd
// never takes more than the NAR and its framing (a block that does not
// shrink is stored raw); from xz or bzip2 it takes more than the original,
// 1.26 to 1.40 times an xz file at Level (BenchmarkLevels), so twice the
// original covers it without holding the NAR's whole size for a NAR xz
// shrank fivefold. A file past it still counts as it grows (the caller
// grows the reservation with the bytes written).
func Room(compression string, fileSize, narSize int64) int64 {
	bound := narSize + narSize/1024 + 1<<10
	if compression == "none" || fileSize <= 0 {
		return bound
	}
	return min(bound, 2*fileSize)
}

// Name is the zstd file's name for the NAR whose sha256 is narHash. It
// depends on the NAR alone, so it is known before the file exists and never
// changes: a narinfo pointing at it stays valid for as long as it is kept.
func Name(narHash []byte) string {
	return nixbase32.EncodeToString(narHash) + ".nar.zst"
}

// Result is what one Transcode read and wrote.
type Result struct {
	In     int64  // bytes of the original file
	NAR    int64  // bytes of the NAR inside
	Out    int64  // bytes of zstd written
	SHA256 []byte // of the zstd file: its FileHash
}

// Transcode reads a NAR file compressed as compression from r and writes
// the NAR inside to w as zstd. It returns ErrMismatch if the NAR is not
// narHash/narSize; then what was written to w must be thrown away.
//
// It runs on the calling goroutine alone, at Level. The output depends on
// the input alone (TestTranscodeDeterministic): a rebuilt file is the same
// bytes (an upgrade that changes Level changes them: rebuildToStore then
// describes the new file).
func Transcode(ctx context.Context, w io.Writer, r io.Reader, compression string, narHash []byte, narSize int64) (Result, error) {
	return transcode(ctx, w, r, compression, narHash, narSize,
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(Level))
}

// Level is the zstd level of the recompression: the better one (about
// zstd -7), chosen by what the client pays to fetch and unpack a NAR and
// by the disk it takes (BenchmarkLevels, BENCHMARKS.md): against xz -6 its
// files are 1.40 times as large on shared libraries and 1.26 on source
// text (the fastest level's 1.61 and 1.48, 13-15 % more disk and LAN
// bytes), unpacked for 0.8-1.0 CPU s per GiB of NAR like every level
// (xz: 9-11), for 34-43 CPU s per GiB of recompression against 24-27 at
// the fastest. The best level saves 8 % more bytes for 2.2-2.4 times the CPU
// and unpacks slower (1.25 s per GiB). The recompression runs one at a
// time in the background while clients pause, so CPU is what it can
// spend; one goroutine leaves the other cores to the clients.
const Level = zstd.SpeedBetterCompression

// transcode is Transcode with the encoder's options, for the benchmarks.
func transcode(ctx context.Context, w io.Writer, r io.Reader, compression string, narHash []byte, narSize int64, opts ...zstd.EOption) (Result, error) {
	var res Result
	in := &counter{r: r}
	dec, err := nardecode.NewReader(in, compression)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrMismatch, err)
	}
	defer dec.Close()
	fileHash := sha256.New()
	out := &counter{w: io.MultiWriter(w, fileHash)}
	enc, err := zstd.NewWriter(out, opts...)
	if err != nil {
		return res, fmt.Errorf("zstd encoder: %w", err)
	}
	narSum := sha256.New()
	n, err := io.Copy(io.MultiWriter(enc, narSum), &ctxReader{ctx: ctx, r: dec})
	if err != nil {
		enc.Close()
		if ctx.Err() != nil || errors.Is(err, ErrWrite) {
			return res, err
		}
		return res, fmt.Errorf("%w: decode %s: %w", ErrMismatch, compression, err)
	}
	if err := enc.Close(); err != nil {
		return res, fmt.Errorf("zstd: %w", err)
	}
	res = Result{In: in.n, NAR: n, Out: out.n, SHA256: fileHash.Sum(nil)}
	if n != narSize {
		return res, fmt.Errorf("%w: NAR is %d bytes, NarSize is %d", ErrMismatch, n, narSize)
	}
	if !bytes.Equal(narSum.Sum(nil), narHash) {
		return res, fmt.Errorf("%w: NarHash differs", ErrMismatch)
	}
	return res, nil
}

// ErrWrite marks a failure of the destination (a full disk, EIO), not of
// the file read.
var ErrWrite = errors.New("recompress: write")

// counter counts what passes through it, reading or writing.
type counter struct {
	r io.Reader
	w io.Writer
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return n, err
}

// ctxReader stops a long transcode when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
