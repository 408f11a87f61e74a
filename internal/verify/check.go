package verify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// finding is one thing wrong with a NAR file.
type finding struct{ kind, detail string }

// checked is what reading one NAR file found.
type checked struct {
	findings []finding
	// notDeep: its NarHash was wanted but its compression has no decoder,
	// so only its size and FileHash were checked.
	notDeep bool
}

// checkNAR reads the NAR file f (size bytes, as stat says) once and checks
// it against its entry: size against FileSize and the indexed size, sha256
// against FileHash, and, when deep is set or there is no FileHash, the NAR
// inside against NarHash and NarSize. A read error (or ctx ending) is
// returned as the error, never as a finding.
func checkNAR(ctx context.Context, f io.Reader, size int64, e store.NAREntry, deep bool, progress func(int64)) (checked, error) {
	var c checked
	add := func(kind, format string, args ...any) {
		c.findings = append(c.findings, finding{kind, fmt.Sprintf(format, args...)})
	}
	src := e.Source
	switch {
	case e.HasSource && src.Size > 0 && size != src.Size:
		add(KindSize, "file is %d bytes, its narinfo's FileSize is %d", size, src.Size)
	case size != e.Size:
		add(KindSize, "file is %d bytes, indexed as %d", size, e.Size)
	}
	wantNAR := e.HasSource && src.NarHash != nil && (deep || src.SHA256 == nil)
	if wantNAR && !nardecode.Supported(compressionName(src.Compression)) {
		c.notDeep, wantNAR = true, false
	}
	// Large reads: a 2 GB file in 1 MiB system calls, not 8 KiB ones.
	in := &ctxReader{ctx: ctx, r: bufio.NewReaderSize(f, 1<<20), progress: progress}
	fileHash := sha256.New()
	tee := io.TeeReader(in, fileHash)
	var nar narResult
	if wantNAR {
		nar = decodeNAR(src.Compression, tee)
	}
	// The rest of the file, for its own sha256: a decoder may stop early.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return c, err
	}
	if in.err != nil {
		return c, in.err
	}
	sum := fileHash.Sum(nil)
	switch {
	case e.HasSource && src.SHA256 != nil && !bytes.Equal(sum, src.SHA256):
		add(KindHash, "sha256 is %s, its narinfo's FileHash is %s", nixbase32.EncodeToString(sum), nixbase32.EncodeToString(src.SHA256))
	case !e.HasSource && !namedBy(e.Name, sum):
		// No narinfo names it: its name is all there is to check. A name
		// is the FileHash, or the NarHash when a narinfo had no FileHash.
		narSum, err := nameNARSum(ctx, e.Name, f)
		if err != nil {
			return c, err
		}
		if !namedBy(e.Name, narSum) {
			add(KindHash, "no narinfo names it, and neither its sha256 nor its NAR's is the hash in its name")
		}
	}
	if wantNAR {
		switch {
		case nar.err != nil:
			add(KindNAR, "does not decompress as %s: %v", compressionName(src.Compression), nar.err)
		case src.NarSize > 0 && nar.size != src.NarSize:
			add(KindNAR, "the NAR inside is %d bytes, its narinfo's NarSize is %d", nar.size, src.NarSize)
		case !bytes.Equal(nar.sum, src.NarHash):
			add(KindNAR, "the NAR inside has sha256 %s, its narinfo's NarHash is %s", nixbase32.EncodeToString(nar.sum), nixbase32.EncodeToString(src.NarHash))
		}
	}
	return c, nil
}

type narResult struct {
	size int64
	sum  []byte
	err  error
}

func decodeNAR(compression string, r io.Reader) narResult {
	dec, err := nardecode.NewReader(r, compressionName(compression))
	if err != nil {
		return narResult{err: err}
	}
	defer dec.Close()
	h := sha256.New()
	n, err := io.Copy(h, dec)
	return narResult{size: n, sum: h.Sum(nil), err: err}
}

// compressionName is the Compression as Nix reads it: none given is bzip2.
func compressionName(c string) string {
	if c == "" {
		return "bzip2"
	}
	return c
}

// namedBy reports whether sum is the digest a NAR name starts with.
func namedBy(name string, sum []byte) bool {
	return len(name) >= 52 && nixbase32.EncodeToString(sum) == name[:52]
}

// nameNARSum decompresses a NAR file no narinfo names, by the compression
// its name's suffix says, and returns the NAR's sha256 (nil if it does not
// decode). f must be an io.Seeker: it is read a second time.
func nameNARSum(ctx context.Context, name string, f io.Reader) ([]byte, error) {
	s, ok := f.(io.Seeker)
	if !ok {
		return nil, nil
	}
	if _, err := s.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	in := &ctxReader{ctx: ctx, r: f}
	r := decodeNAR(suffixCompression(name), in)
	if in.err != nil {
		return nil, in.err
	}
	if r.err != nil {
		return nil, nil
	}
	return r.sum, nil
}

// suffixCompression is the compression a NAR name's suffix stands for.
func suffixCompression(name string) string {
	_, ext, _ := strings.Cut(name, ".nar")
	switch ext {
	case "":
		return "none"
	case ".xz":
		return "xz"
	case ".bz2":
		return "bzip2"
	case ".zst":
		return "zstd"
	case ".gz":
		return "gzip"
	}
	return strings.TrimPrefix(ext, ".")
}

// ctxReader stops reading when ctx ends, counts progress, and remembers
// its own error so a decoder's complaint is not mistaken for a bad file.
type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	progress func(int64)
	err      error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if n > 0 && c.progress != nil {
		c.progress(int64(n))
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}
