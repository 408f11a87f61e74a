package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes a size flag takes: SI (powers of 1000) and
// IEC (powers of 1024), as df -H and df -h print them; case-insensitive.
var sizeUnits = []struct {
	suffix string
	factor float64
}{
	// Longest first, so "GiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// parseSize reads a byte count with its unit: "500MB", "200GiB", "1.5G"
// (a bare K, M, G or T is binary, as in Nix's own options), "7B"; "0"
// alone needs none. Any other bare number is refused: `--max-size 200`
// once meant 200 bytes and evicted the whole cache.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	factor := 0.0
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || math.IsNaN(n) || n*max(factor, 1) >= math.MaxInt64 {
		return 0, fmt.Errorf("want a size like 10GiB or 500MB, got %q", s)
	}
	if factor == 0 && n != 0 {
		return 0, fmt.Errorf("want a size with a unit like 10GiB or 500MB, got %q: did you mean %s?", s, unitHint(t, n))
	}
	return int64(n * factor), nil
}

// unitHint guesses the unit a bare number left out: a small one is a
// count of GiB (`200`), a large one a count of bytes (`1073741824`).
func unitHint(t string, n float64) string {
	if n < 1<<16 {
		return t + "GiB"
	}
	if f := formatSize(int64(n)); n == math.Trunc(n) && f != t+"B" {
		return t + "B (" + f + ")"
	}
	return t + "B"
}

// formatSize prints n exactly, the way parseSize reads it back: in the
// largest binary unit that takes at most two decimals ("1.5GiB"), or in
// bytes; 0 as "0".
func formatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n < u.factor {
			continue
		}
		v := strconv.FormatFloat(float64(n)/float64(u.factor), 'f', -1, 64)
		if _, frac, _ := strings.Cut(v, "."); len(frac) <= 2 {
			if back, err := parseSize(v + u.suffix); err == nil && back == n {
				return v + u.suffix
			}
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// sizeFlag is a flag.Value for a byte count with units.
type sizeFlag struct{ n *int64 }

func (f sizeFlag) String() string {
	if f.n == nil {
		return ""
	}
	return formatSize(*f.n)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}
