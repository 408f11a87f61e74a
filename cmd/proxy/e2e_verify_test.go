package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestVerifyRealNix fills the proxy's cache with real nix (xz and zstd NARs
// nix wrote), breaks it, and checks that `verify` names every bad entry and
// exits 1, that `verify --repair` mends it and exits 0, and that a fresh
// nix copy then still succeeds (the dropped NARs are fetched again); then
// the same against the cache dir with no server running.
func TestVerifyRealNix(t *testing.T) {
	step := stepLogger(t)
	bin := e2eBinary(t, true)
	c, cache := nixtest.BuildClosure(t, 4<<20)
	upstream, _ := nixtest.ServeDir(t, cache.Dir)
	cacheDir := t.TempDir()
	p := startProxy(t, bin, cacheDir, cache.PublicKey, upstream)
	srv := "--server=" + p.url
	copyThrough(t, "A, fills the cache", p.url, cache.PublicKey, c)
	r := cli(t, bin, 0, "verify", "--deep", srv)
	if !strings.Contains(r.stderr, "all sound") {
		t.Errorf("verify --deep of a sound cache says:\n%s%s", r.stdout, r.stderr)
	}
	step("nix copy through the proxy filled the cache; verify --deep: exit 0")

	var small string // an xz-compressed path of the closure
	for _, sp := range c.Paths {
		if sp != c.Root && sp != c.Image {
			small = sp
			break
		}
	}
	flipped := narPath(t, cacheDir, p.url, c.Image)
	truncated := narPath(t, cacheDir, p.url, small)
	missing := narPath(t, cacheDir, p.url, c.Root)
	flipByte(t, flipped)
	if err := os.Truncate(truncated, 10); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(cacheDir, "nar", "zz", "notes.txt")
	strayTemp := filepath.Join(cacheDir, "tmp", filepath.Base(flipped)+".4242")
	first := "z"
	if filepath.Base(flipped)[0] == 'z' {
		first = "y"
	}
	other := first + filepath.Base(flipped)[1:] // a NAR name no row has
	unindexed := filepath.Join(cacheDir, "nar", other[:2], other)
	for _, f := range []string{stray, strayTemp, unindexed} {
		os.MkdirAll(filepath.Dir(f), 0o755)
		if err := os.WriteFile(f, []byte("should not be here"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	r = cli(t, bin, 1, "verify", srv)
	want := map[string]string{
		filepath.Base(flipped):      "[hash]",
		filepath.Base(truncated):    "[size]",
		filepath.Base(missing):      "[missing]",
		rel(t, cacheDir, stray):     "[stray]",
		rel(t, cacheDir, strayTemp): "[temp]",
		rel(t, cacheDir, unindexed): "[unindexed]",
	}
	wantNamed(t, r.stdout, "bad", want)
	step("flipped a byte, truncated, deleted three NARs, added three strays; verify: exit 1 naming all six:\n%s", r.stdout)

	r = cli(t, bin, 0, "verify", "--repair", srv)
	wantNamed(t, r.stdout, "repaired", want)
	cli(t, bin, 0, "verify", "--deep", srv)
	step("verify --repair: exit 0; verify --deep after: exit 0")

	copyThrough(t, "B, after repair", p.url, cache.PublicKey, c)
	cli(t, bin, 0, "verify", "--deep", srv)
	step("fresh nix copy succeeded (the dropped NARs came from the upstream again); verify --deep: exit 0")

	// No server: with --cache-dir the command opens the cache dir itself.
	p.terminate(t)
	flipByte(t, flipped)
	local := []string{"--cache-dir", cacheDir}
	r = cli(t, bin, 1, append([]string{"verify"}, local...)...)
	wantNamed(t, r.stdout, "bad", map[string]string{filepath.Base(flipped): "[hash]"})
	cli(t, bin, 0, append([]string{"verify", "--repair"}, local...)...)
	cli(t, bin, 0, append([]string{"verify", "--deep"}, local...)...)
	step("server stopped; local verify: exit 1 naming the flipped NAR, --repair exit 0, --deep exit 0")

	p = startProxy(t, bin, cacheDir, cache.PublicKey, upstream)
	copyThrough(t, "C, after a local repair", p.url, cache.PublicKey, c)
	p.terminate(t)
	step("restarted; fresh nix copy succeeded")
}

// wantNamed checks that each name in want has a line starting with word
// (bad, repaired) and naming its kind, and that no other line does.
func wantNamed(t *testing.T, out, word string, want map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for name, kind := range want {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, word+" ") && strings.Contains(l, name+" "+kind) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %q line names %s %s:\n%s", word, name, kind, out)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("%d lines for %d bad entries:\n%s", len(lines), len(want), out)
	}
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func rel(t *testing.T, dir, path string) string {
	t.Helper()
	r, err := filepath.Rel(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.ToSlash(r)
}
