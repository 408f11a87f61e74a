package nardecode_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
	"github.com/ulikunitz/xz"
)

func compress(t *testing.T, method string, plain []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch method {
	case "none":
		return plain
	case "zstd":
		w, _ := zstd.NewWriter(&b)
		w.Write(plain)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(plain)
		w.Close()
	case "gzip":
		w := gzip.NewWriter(&b)
		w.Write(plain)
		w.Close()
	case "bzip2": // the standard library only decodes bzip2
		f, err := os.ReadFile("testdata/nar.bz2")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	return b.Bytes()
}

func TestMeasure(t *testing.T) {
	plain, err := os.ReadFile("testdata/nar")
	if err != nil {
		t.Fatal(err)
	}
	narSum := sha256.Sum256(plain)
	for _, method := range []string{"none", "zstd", "xz", "bzip2", "gzip"} {
		t.Run(method, func(t *testing.T) {
			file := compress(t, method, plain)
			fileSum := sha256.Sum256(file)
			// Written in uneven pieces, as a network body arrives.
			m, err := nardecode.NewMeter(method)
			if err != nil {
				t.Fatal(err)
			}
			for rest := file; len(rest) > 0; {
				n := min(len(rest), 777)
				if _, err := m.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			d, err := m.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.FileSHA256, fileSum[:]) || d.FileSize != int64(len(file)) {
				t.Errorf("file digest/size wrong: %d", d.FileSize)
			}
			if !bytes.Equal(d.NarSHA256, narSum[:]) || d.NarSize != int64(len(plain)) {
				t.Errorf("NAR digest/size wrong: %d, want %d", d.NarSize, len(plain))
			}
		})
	}
}

func TestMeasureRefuses(t *testing.T) {
	plain, _ := os.ReadFile("testdata/nar")
	zst := compress(t, "zstd", plain)
	for _, tc := range []struct {
		name, method string
		file         []byte
	}{
		{"truncated zstd", "zstd", zst[:len(zst)/2]},
		{"garbage as xz", "xz", plain},
		{"garbage as bzip2", "bzip2", plain},
		{"trailing bytes", "zstd", append(append([]byte(nil), zst...), "junk"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := nardecode.Measure(bytes.NewReader(tc.file), tc.method); err == nil {
				t.Fatal("measured a broken file without error")
			}
		})
	}
	if _, err := nardecode.NewMeter("br"); !errors.Is(err, nardecode.ErrUnsupported) {
		t.Fatalf("br: %v, want ErrUnsupported", err)
	}
}
