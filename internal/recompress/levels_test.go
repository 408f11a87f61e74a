package recompress

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// BenchmarkLevels measures what each zstd level costs and gives, against
// the xz file Nix's upstreams serve (xz -6, one thread): the zstd file's
// size over the xz file's (the disk and the LAN bytes it costs), the
// client's CPU to unpack it (the zstd and xz commands, C like Nix's
// decoders, in their own process, so the figure is their CPU time whatever
// else the machine runs) and the recompression's CPU (this process).
//
// Two corpora: "libs", this machine's shared libraries one after the other
// (binaries, like most of cache.nixos.org; libsNAR, whose xz -6 runs on one
// thread, xz's default), and "text", the NAR of Go's source tree (nix-store --dump $(go env GOROOT)/src: source files, like a
// source tarball's unpacked tree). NCP_LEVELS_MIB bounds libs (default 448).
//
//	go test -run '^$' -bench Levels -benchtime 1x -timeout 1h ./internal/recompress
func BenchmarkLevels(b *testing.B) {
	mib := 448
	if v, err := strconv.Atoi(os.Getenv("NCP_LEVELS_MIB")); err == nil && v > 0 {
		mib = v
	}
	for _, corpus := range []struct {
		name string
		nar  func(b *testing.B) (nar, xzFile []byte)
	}{
		{"libs", func(b *testing.B) ([]byte, []byte) { return libsNAR(b, mib<<20) }},
		{"text", goSourceNAR},
	} {
		b.Run(corpus.name, func(b *testing.B) {
			nar, xzData := corpus.nar(b)
			dir := b.TempDir()
			xzFile := filepath.Join(dir, "nar.xz")
			if err := os.WriteFile(xzFile, xzData, 0o600); err != nil {
				b.Fatal(err)
			}
			gib := float64(len(nar)) / (1 << 30)
			xzDecode, err := decodeCPU("xz", xzFile)
			if err != nil {
				b.Skipf("xz -d: %v", err)
			}
			b.Logf("%s: NAR %d B, xz -6 %d B (%.1f %%), xz -d %.2f cpu-s/GiB", corpus.name, len(nar), len(xzData),
				100*float64(len(xzData))/float64(len(nar)), xzDecode.Seconds()/gib)
			sum := sha256.Sum256(nar)
			for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
				b.Run(level.String(), func(b *testing.B) {
					var out bytes.Buffer
					var encode time.Duration
					for b.Loop() {
						out.Reset()
						c0 := cpu()
						if _, err := transcode(b.Context(), &out, bytes.NewReader(xzData), "xz", sum[:], int64(len(nar)),
							zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(level)); err != nil {
							b.Fatal(err)
						}
						encode = cpu() - c0
					}
					zstFile := filepath.Join(dir, "nar.zst")
					if err := os.WriteFile(zstFile, out.Bytes(), 0o600); err != nil {
						b.Fatal(err)
					}
					zstdDecode, err := decodeCPU("zstd", zstFile)
					if err != nil {
						b.Skipf("zstd -d: %v", err)
					}
					b.ReportMetric(float64(out.Len())/float64(len(xzData)), "size/xz")
					b.ReportMetric(float64(out.Len())/float64(len(nar)), "size/NAR")
					b.ReportMetric(zstdDecode.Seconds()/gib, "unzstd-cpu-s/GiB")
					b.ReportMetric(xzDecode.Seconds()/gib, "unxz-cpu-s/GiB")
					b.ReportMetric(encode.Seconds()/gib, "transcode-cpu-s/GiB")
				})
			}
		})
	}
}

// goSourceNAR is the NAR of Go's source tree, as nix-store --dump writes
// it, and that NAR compressed by xz -6 (one thread, as libsNAR's).
func goSourceNAR(b *testing.B) (nar, xzFile []byte) {
	b.Helper()
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Skipf("go env GOROOT: %v", err)
	}
	nar, err = exec.Command("nix-store", "--dump", string(bytes.TrimSpace(goroot))+"/src").Output()
	if err != nil {
		b.Skipf("nix-store --dump: %v", err)
	}
	cmd := exec.Command("xz", "-6", "-T1", "-c")
	cmd.Stdin = bytes.NewReader(nar)
	if xzFile, err = cmd.Output(); err != nil {
		b.Skipf("xz: %v", err)
	}
	return nar, xzFile
}

// decodeCPU is the CPU time (user and system) of `name -d -c path`, the
// best of three runs, its output thrown away.
func decodeCPU(name, path string) (time.Duration, error) {
	best := time.Duration(0)
	for range 3 {
		cmd := exec.Command(name, "-d", "-c", path)
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("%s -d: %w", name, err)
		}
		t := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if best == 0 || t < best {
			best = t
		}
	}
	return best, nil
}
