package recompress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// compressed returns testdata's NAR as compression makes it. bzip2 is the
// file beside nardecode's tests: the standard library only decodes it.
func compressed(t *testing.T, nar []byte, compression string) []byte {
	t.Helper()
	switch compression {
	case "none":
		return nar
	case "xz":
		var b bytes.Buffer
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(nar)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	case "bzip2":
		f, err := os.ReadFile("../nardecode/testdata/nar.bz2")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	t.Fatalf("no %s", compression)
	return nil
}

func TestTranscode(t *testing.T) {
	nar, err := os.ReadFile("../nardecode/testdata/nar")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nar)
	other := sha256.Sum256([]byte("another NAR"))
	tests := []struct {
		name        string
		compression string
		narHash     []byte
		narSize     int64
		corrupt     bool
		wantErr     error
	}{
		{"xz", "xz", sum[:], int64(len(nar)), false, nil},
		{"bzip2", "bzip2", sum[:], int64(len(nar)), false, nil},
		{"none", "none", sum[:], int64(len(nar)), false, nil},
		{"wrong NarHash", "xz", other[:], int64(len(nar)), false, ErrMismatch},
		{"wrong NarSize", "xz", sum[:], int64(len(nar)) + 1, false, ErrMismatch},
		{"corrupt xz", "xz", sum[:], int64(len(nar)), true, ErrMismatch},
		{"corrupt bzip2", "bzip2", sum[:], int64(len(nar)), true, ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := bytes.Clone(compressed(t, nar, tt.compression))
			if tt.corrupt {
				file[len(file)/2] ^= 0xff
			}
			var out bytes.Buffer
			res, err := Transcode(context.Background(), &out, bytes.NewReader(file), tt.compression, tt.narHash, tt.narSize)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d, err := zstd.NewReader(&out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got, err := io.ReadAll(d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, nar) {
				t.Fatal("zstd file does not hold the NAR")
			}
			fileSum := sha256.Sum256(out.Bytes())
			if res.In != int64(len(file)) || res.NAR != int64(len(nar)) || res.Out != int64(out.Len()) || !bytes.Equal(res.SHA256, fileSum[:]) {
				t.Fatalf("result %+v: in %d, NAR %d, out %d", res, len(file), len(nar), out.Len())
			}
		})
	}
}

func TestEligible(t *testing.T) {
	tests := []struct {
		compression string
		narSize     int64
		want        bool
	}{
		{"xz", MinNAR - 1, false},
		{"xz", MinNAR, true},
		{"bzip2", MinNAR - 1, false},
		{"bzip2", MinNAR, true},
		{"none", MinNAR - 1, false},
		{"none", MinNAR, true},
		{"zstd", 1 << 30, false},
		{"gzip", 1 << 30, false},
	}
	for _, tt := range tests {
		if got := Eligible(tt.compression, tt.narSize); got != tt.want {
			t.Errorf("Eligible(%q, %d) = %v", tt.compression, tt.narSize, got)
		}
	}
}

func TestName(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	n := Name(sum[:])
	if len(n) != 52+len(".nar.zst") || n != Name(sum[:]) {
		t.Fatalf("Name = %q", n)
	}
}

// TestRoom: the room held for a zstd file covers what zstd can make of
// the NAR (its size plus framing) and, from xz or bzip2, twice the
// original, whichever is less.
func TestRoom(t *testing.T) {
	tests := []struct {
		compression       string
		fileSize, narSize int64
		want              int64
	}{
		{"none", 1 << 20, 1 << 20, 1<<20 + 1<<10 + 1<<10},
		{"xz", 100 << 10, 1 << 20, 200 << 10},
		{"bzip2", 100 << 10, 1 << 20, 200 << 10},
		{"xz", 1 << 20, 1 << 20, 1<<20 + 1<<10 + 1<<10}, // random: the NAR's bound
		{"xz", 0, 64 << 10, 64<<10 + 64 + 1<<10},        // FileSize unknown
	}
	for _, tt := range tests {
		if got := Room(tt.compression, tt.fileSize, tt.narSize); got != tt.want {
			t.Errorf("Room(%q, %d, %d) = %d, want %d", tt.compression, tt.fileSize, tt.narSize, got, tt.want)
		}
	}
}

// TestTranscodeLevel: Transcode writes at Level, which packs text tighter
// than the fastest level did (its files were 1.48 times xz's on source
// text, Level's 1.26: BenchmarkLevels).
func TestTranscodeLevel(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files here: %v", err)
	}
	var nar bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		nar.Write(data)
	}
	sum := sha256.Sum256(nar.Bytes())
	var got, fastest bytes.Buffer
	if _, err := Transcode(t.Context(), &got, bytes.NewReader(nar.Bytes()), "none", sum[:], int64(nar.Len())); err != nil {
		t.Fatal(err)
	}
	if _, err := transcode(t.Context(), &fastest, bytes.NewReader(nar.Bytes()), "none", sum[:], int64(nar.Len()),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest)); err != nil {
		t.Fatal(err)
	}
	if got.Len()*100 > fastest.Len()*93 {
		t.Errorf("Transcode wrote %d bytes of %d of text, the fastest level %d: want 7 %% less at least", got.Len(), nar.Len(), fastest.Len())
	}
	t.Logf("text %d B: Level %d B, fastest %d B", nar.Len(), got.Len(), fastest.Len())
}
