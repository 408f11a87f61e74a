package recompress

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
)

// libsNAR is up to n bytes of the machine's shared libraries, one after
// the other: compressible like cache.nixos.org's NARs (random bytes are
// not). The benchmarks skip without them or without the xz command.
func libsNAR(b *testing.B, n int) (nar, xzFile []byte) {
	b.Helper()
	files, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/*.so*")
	sort.Strings(files)
	var buf bytes.Buffer
	for _, f := range files {
		if buf.Len() >= n {
			break
		}
		if data, err := os.ReadFile(f); err == nil {
			buf.Write(data)
		}
	}
	if buf.Len() < n/2 {
		b.Skip("not enough shared libraries in /usr/lib/x86_64-linux-gnu")
	}
	cmd := exec.Command("xz", "-6", "-T1", "-c")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		b.Skipf("xz: %v", err)
	}
	return buf.Bytes(), out
}

// cpu is the process's CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTranscode reports the CPU seconds per GiB of NAR that each
// part of a recompression costs: the xz decode alone, and the whole
// transcode with each encoder setting, with the zstd file's size.
//
//	go test -run '^$' -bench Transcode -benchtime 3x ./internal/recompress
func BenchmarkTranscode(b *testing.B) {
	nar, xzFile := libsNAR(b, 64<<20)
	sum := sha256.Sum256(nar)
	gib := float64(len(nar)) / (1 << 30)
	b.Run("xz-decode-only", func(b *testing.B) {
		b.SetBytes(int64(len(nar)))
		c0 := cpu()
		for b.Loop() {
			d, err := nardecode.NewReader(bytes.NewReader(xzFile), "xz")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, d); err != nil {
				b.Fatal(err)
			}
			d.Close()
		}
		b.ReportMetric((cpu()-c0).Seconds()/float64(b.N)/gib, "cpu-s/GiB")
	})
	for _, tc := range []struct {
		name  string
		level zstd.EncoderLevel
		procs int
	}{
		{"fastest-1", zstd.SpeedFastest, 1},
		{"default-1", zstd.SpeedDefault, 1},
		{"default-all", zstd.SpeedDefault, runtime.GOMAXPROCS(0)},
		{"better-1", zstd.SpeedBetterCompression, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			c0 := cpu()
			var res Result
			for b.Loop() {
				var err error
				res, err = transcode(b.Context(), io.Discard, bytes.NewReader(xzFile), "xz", sum[:], int64(len(nar)),
					zstd.WithEncoderLevel(tc.level), zstd.WithEncoderConcurrency(tc.procs))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((cpu()-c0).Seconds()/float64(b.N)/gib, "cpu-s/GiB")
			b.ReportMetric(float64(res.Out)/float64(len(nar)), "ratio")
		})
	}
}
