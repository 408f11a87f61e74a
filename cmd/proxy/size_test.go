package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1073741824B", 1 << 30},
		{"500MB", 500e6},
		{"500mb", 500e6},
		{"200GiB", 200 << 30},
		{"200 GiB", 200 << 30},
		{"1.5G", 3 << 29},
		{"10k", 10 << 10},
		{"2TB", 2e12},
		{"7B", 7},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "abc", "-1GiB", "10XB", "GiB", "1e30TB", "NaN"} {
		_, err := parseSize(bad)
		if err == nil || !strings.Contains(err.Error(), "want a size like 10GiB or 500MB") {
			t.Errorf("parseSize(%q) = %v, want an error saying what is expected", bad, err)
		}
	}
}

// TestSizeNeedsAUnit: a bare number is not bytes. `--max-size 200` once
// bounded the cache at 200 bytes and evicted every NAR.
func TestSizeNeedsAUnit(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"200", `want a size with a unit like 10GiB or 500MB, got "200": did you mean 200GiB?`},
		{" 1.5 ", `want a size with a unit like 10GiB or 500MB, got " 1.5 ": did you mean 1.5GiB?`},
		{"1073741824", `want a size with a unit like 10GiB or 500MB, got "1073741824": did you mean 1073741824B (1GiB)?`},
		{"615020", `want a size with a unit like 10GiB or 500MB, got "615020": did you mean 615020B?`},
	} {
		_, err := parseSize(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("parseSize(%q) = %v\nwant %s", tt.in, err, tt.want)
		}
	}
	for _, zero := range []string{"0", "0.0", "0GiB"} {
		if n, err := parseSize(zero); err != nil || n != 0 {
			t.Errorf("parseSize(%q) = %d, %v; want 0 (none)", zero, n, err)
		}
	}
}

// TestSizeWithoutUnitEverywhere: the flag, its environment variable and
// the config file all refuse a size without a unit, for every size setting.
func TestSizeWithoutUnitEverywhere(t *testing.T) {
	for _, name := range []string{"max-size", "min-free", "upload-max-size"} {
		file := filepath.Join(t.TempDir(), "proxy.toml")
		k, _ := keyOfFlag(name)
		if err := os.WriteFile(file, []byte("["+k.section+"]\n"+k.key+" = 200\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, in := range []struct {
			args []string
			env  string
		}{
			{args: []string{"--" + name, "200"}},
			{env: "200"},
			{args: []string{"--config", file}},
		} {
			_, _, err := parseServeConfig(in.args, func(k string) string {
				if k == envName(name) {
					return in.env
				}
				return ""
			})
			if err == nil || !strings.Contains(err.Error(), "did you mean 200GiB?") {
				t.Errorf("%s from %v %q: %v, want a refusal asking for a unit", name, in.args, in.env, err)
			}
		}
	}
}

func TestFormatSizeRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 7, 1 << 10, 200 << 30, 3 << 40, 3 << 29, 615020, 500e6, 1 << 62} {
		got, err := parseSize(formatSize(n))
		if err != nil || got != n {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %v", n, formatSize(n), got, err)
		}
	}
	for n, want := range map[int64]string{0: "0", 3 << 29: "1.5GiB", 200 << 30: "200GiB", 615020: "615020B", 1536: "1.5KiB", 1 << 62: "4194304TiB", 7: "7B"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSizeFlags(t *testing.T) {
	cfg, _, err := parseServeConfig([]string{"--min-free", "500MB"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.minFree != 500e6 {
		t.Errorf("min-free %d", cfg.minFree)
	}
	_, _, err = parseServeConfig(nil, func(k string) string {
		if k == "NIX_CACHE_PROXY_MIN_FREE" {
			return "abc"
		}
		return ""
	})
	if want := `NIX_CACHE_PROXY_MIN_FREE: want a size like 10GiB or 500MB, got "abc"`; err == nil || err.Error() != want {
		t.Errorf("bad env size: %v, want %s", err, want)
	}
	_, _, err = parseServeConfig([]string{"--min-free", "abc"}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), `min-free: want a size like 10GiB or 500MB, got "abc"`) {
		t.Errorf("bad flag size: %v", err)
	}
}

func TestEvictionConfigFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "proxy.toml")
	if err := os.WriteFile(file, []byte("[disk]\nmax-size = \"200GiB\"\nmin-free = \"5GB\"\nkeep-latest = [\"nixos*.qcow2=3\", \"*.img=1\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseServeConfig([]string{"--config", file}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := []evict.Rule{{Glob: "nixos*.qcow2", Keep: 3}, {Glob: "*.img", Keep: 1}}
	if cfg.maxSize != 200<<30 || cfg.minFree != 5e9 || !slices.Equal(cfg.keepRules, want) {
		t.Errorf("max-size %d, min-free %d, keep-latest %v", cfg.maxSize, cfg.minFree, cfg.keepRules)
	}
	if _, _, err := parseServeConfig([]string{"--keep-latest", "x"}, func(string) string { return "" }); err == nil ||
		!strings.Contains(err.Error(), "--keep-latest: want GLOB=K") {
		t.Errorf("bad --keep-latest: %v", err)
	}
}
