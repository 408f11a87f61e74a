// Package nardecode reads the NAR inside a compressed NAR file, and measures
// a file as it streams: its own sha256 and size (FileHash, FileSize) and the
// sha256 and size of the NAR inside (NarHash, NarSize). Uploads and verify
// check files against their narinfo with it.
package nardecode

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrUnsupported means the proxy cannot decompress this Compression.
var ErrUnsupported = errors.New("nardecode: unsupported compression")

// Supported reports whether NewReader can decompress compression.
func Supported(compression string) bool {
	switch compression {
	case "none", "zstd", "xz", "bzip2", "gzip":
		return true
	}
	return false
}

// NewReader returns the uncompressed NAR read from r, a file compressed as
// a narinfo's Compression says ("none", "zstd", "xz", "bzip2", "gzip").
func NewReader(r io.Reader, compression string) (io.ReadCloser, error) {
	switch compression {
	case "none":
		return io.NopCloser(r), nil
	case "zstd":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return d.IOReadCloser(), nil
	case "xz":
		d, err := xz.NewReader(bufio.NewReaderSize(r, 64<<10))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(d), nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(bufio.NewReaderSize(r, 64<<10))), nil
	case "gzip":
		d, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, compression)
}

// Digests are what Measure found.
type Digests struct {
	FileSHA256 []byte
	FileSize   int64
	NarSHA256  []byte
	NarSize    int64
}

// Meter measures a file written to it. Close it to get the digests; the
// NAR inside is decompressed on a goroutine of its own as the file streams.
type Meter struct {
	compression string
	file        hash.Hash
	fileSize    int64
	pw          *io.PipeWriter
	done        chan struct{}
	nar         hash.Hash
	narSize     int64
	err         error // of the decompressing side, read after done
}

// NewMeter returns a Meter for a file compressed with compression.
func NewMeter(compression string) (*Meter, error) {
	if !Supported(compression) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, compression)
	}
	m := &Meter{compression: compression, file: sha256.New(), done: make(chan struct{})}
	if compression == "none" {
		close(m.done)
		return m, nil
	}
	pr, pw := io.Pipe()
	m.pw, m.nar = pw, sha256.New()
	go func() {
		defer close(m.done)
		d, err := NewReader(pr, compression)
		if err == nil {
			m.narSize, err = io.Copy(m.nar, d)
			d.Close()
		}
		if err == nil {
			// Trailing bytes after the compressed stream are not the NAR.
			var one [1]byte
			if n, _ := io.ReadFull(pr, one[:]); n > 0 {
				err = errors.New("data after the end of the compressed stream")
			}
		}
		m.err = err
		pr.CloseWithError(err) // unblocks the writer if decoding stopped early
	}()
	return m, nil
}

// Write adds p to the file.
func (m *Meter) Write(p []byte) (int, error) {
	m.file.Write(p)
	m.fileSize += int64(len(p))
	if m.pw == nil {
		return len(p), nil
	}
	if _, err := m.pw.Write(p); err != nil {
		return 0, fmt.Errorf("decompress %s: %w", m.compression, err)
	}
	return len(p), nil
}

// Close ends the file and returns its digests, or why the NAR inside could
// not be read.
func (m *Meter) Close() (Digests, error) {
	d := Digests{FileSHA256: m.file.Sum(nil), FileSize: m.fileSize}
	if m.pw == nil {
		d.NarSHA256, d.NarSize = d.FileSHA256, d.FileSize
		return d, nil
	}
	m.pw.Close()
	<-m.done
	if m.err != nil {
		return d, fmt.Errorf("decompress %s: %w", m.compression, m.err)
	}
	d.NarSHA256, d.NarSize = m.nar.Sum(nil), m.narSize
	return d, nil
}

// Measure reads a whole file from r.
func Measure(r io.Reader, compression string) (Digests, error) {
	m, err := NewMeter(compression)
	if err != nil {
		return Digests{}, err
	}
	if _, err := io.Copy(m, r); err != nil {
		m.Close()
		return Digests{}, err
	}
	return m.Close()
}
