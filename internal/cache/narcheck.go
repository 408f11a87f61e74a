package cache

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// narCheck verifies the NAR inside a compressed download against the
// narinfo's NarHash and NarSize, for upstreams that publish no FileHash.
// It is written the file's bytes as they land; result says whether the
// decompressed stream was the NAR the narinfo promised.
type narCheck interface {
	io.Writer
	result() error
}

// newNARCheck returns a check for src, or nil when src has a FileHash (the
// file's own sha256 is checked then) or a compression this proxy cannot
// decode while streaming (then only the size is checked).
func newNARCheck(src store.NARSource) narCheck {
	if src.SHA256 != nil || src.NarHash == nil || src.Compression != "zstd" {
		return nil
	}
	return newZstdCheck(src.NarHash, src.NarSize)
}

// zstdCheck decompresses on its own goroutine, fed through a pipe, so a
// multi-GB NAR is checked in constant memory as it arrives.
type zstdCheck struct {
	pw   *io.PipeWriter
	done chan error
	once sync.Once
	err  error
}

func newZstdCheck(narHash []byte, narSize int64) *zstdCheck {
	pr, pw := io.Pipe()
	c := &zstdCheck{pw: pw, done: make(chan error, 1)}
	go func() {
		err := decodeAndCompare(pr, narHash, narSize)
		// Unblock and fail the writer if decoding stopped early.
		pr.CloseWithError(fmt.Errorf("NAR check ended: %v", err))
		c.done <- err
	}()
	return c
}

func decodeAndCompare(r io.Reader, narHash []byte, narSize int64) error {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return verifyFailed("hash", "zstd: %v", err)
	}
	defer dec.Close()
	h := sha256.New()
	n, err := io.Copy(h, dec)
	if err != nil {
		return verifyFailed("hash", "zstd stream: %v", err)
	}
	if narSize > 0 && n != narSize {
		return verifyFailed("size", "NAR inside is %d bytes, NarSize is %d", n, narSize)
	}
	if !bytes.Equal(h.Sum(nil), narHash) {
		return verifyFailed("hash", "NAR inside does not match NarHash")
	}
	return nil
}

func (c *zstdCheck) Write(p []byte) (int, error) { return c.pw.Write(p) }

// result ends the input and waits for the verdict; it may be called again
// (the deferred cleanup of a download that failed otherwise).
func (c *zstdCheck) result() error {
	c.once.Do(func() {
		c.pw.Close()
		c.err = <-c.done
	})
	return c.err
}
