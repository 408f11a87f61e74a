package recompress

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestTranscodeDeterministic: a zstd file rebuilt after eviction keeps the
// name, ETag and FileHash of the first one, so the same NAR must always
// recompress to the same bytes, whatever the machine's CPU count and
// however the reads split.
func TestTranscodeDeterministic(t *testing.T) {
	// Compressible, not trivially: text-like with repeats, 3 MiB (several
	// encoder blocks).
	rng := rand.New(rand.NewPCG(1, 2))
	var nar bytes.Buffer
	words := []string{"lib", "nix", "store", "glibc", "so.6", "\x00\x01", "x86_64", "ELF"}
	for nar.Len() < 3<<20 {
		nar.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(7) == 0 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			nar.Write(b[:])
		}
	}
	sum := sha256.Sum256(nar.Bytes())
	transcode := func(procs int, chunk int) []byte {
		old := runtime.GOMAXPROCS(procs)
		defer runtime.GOMAXPROCS(old)
		var out bytes.Buffer
		r := io.Reader(bytes.NewReader(nar.Bytes()))
		if chunk > 0 {
			r = &chunked{r: r, n: chunk}
		}
		if _, err := Transcode(t.Context(), &out, r, "none", sum[:], int64(nar.Len())); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	first := transcode(1, 0)
	for _, tc := range []struct{ procs, chunk int }{{2, 0}, {4, 0}, {8, 777}, {1, 65536}} {
		if again := transcode(tc.procs, tc.chunk); !bytes.Equal(again, first) {
			t.Errorf("GOMAXPROCS %d, reads of %d: %d bytes, differ from the first %d", tc.procs, tc.chunk, len(again), len(first))
		}
	}
}

// chunked returns at most n bytes per Read.
type chunked struct {
	r io.Reader
	n int
}

func (c *chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }
