package recompress

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

const (
	// worthSamples and worthSample are how much of an uncompressed NAR is
	// compressed to judge it: samples spread over the file, since a disk
	// image can start with a compressible header and hold random bytes.
	worthSamples = 16
	worthSample  = 64 << 10
	// worthRatio is the most a zstd file may keep of the NAR, in percent,
	// for it to be worth a second file and a transcode's CPU.
	worthRatio = 90
)

// Worthwhile reports whether the uncompressed NAR file f, of size bytes, is
// worth recompressing: samples spread over it must shrink to worthRatio %
// or less at zstd's fastest level (Level shrinks them at least as much,
// for several times the CPU). A NAR of random or already
// compressed bytes (an encrypted or compressed disk image) would take a
// core from the clients for a whole transcode and save nothing. It reads
// at most worthSamples × worthSample bytes and leaves f at its start. The
// answer depends on the bytes alone.
func Worthwhile(f io.ReadSeeker, size int64) (bool, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return false, fmt.Errorf("zstd encoder: %w", err)
	}
	defer enc.Close()
	buf := make([]byte, worthSample)
	var in, out int64
	for i := range int64(worthSamples) {
		off := i * size / worthSamples
		if off+worthSample > size {
			off = max(0, size-worthSample)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return false, fmt.Errorf("sample NAR at %d: %w", off, err)
		}
		n, err := io.ReadFull(f, buf)
		if err != nil && err != io.ErrUnexpectedEOF {
			return false, fmt.Errorf("sample NAR at %d: %w", off, err)
		}
		in += int64(n)
		out += int64(len(enc.EncodeAll(buf[:n], nil)))
		if size <= worthSample {
			break // the whole file was the sample
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("rewind NAR: %w", err)
	}
	return in > 0 && out*100 <= in*worthRatio, nil
}
