package main

import (
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestRepairPinnedRealNix is issue 20's item 7: a corrupted NAR in a pinned
// closure was "repaired … (dropped)", exit 0, and `check --closure` then
// said "NAR not cached". verify --repair fetches it again from its
// upstream, so the closure stays whole; with the upstream gone it cannot,
// and says so with exit 1.
func TestRepairPinnedRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	c, cache := nixtest.BuildClosure(t, 1<<20)
	upstream, stop := nixtest.ServeDir(t, cache.Dir)
	cacheDir := t.TempDir()
	p := startProxy(t, bin, cacheDir, cache.PublicKey, upstream)
	srv := "--server=" + p.url
	cli(t, bin, 0, "pin", srv, c.Root)
	img := narPath(t, cacheDir, p.url, c.Image)
	flipByte(t, img)

	r := cli(t, bin, 0, "verify", "--repair", srv)
	if !strings.Contains(r.stdout, "fetched again from its upstream") {
		t.Errorf("verify --repair of a pinned NAR:\n%s%s", r.stdout, r.stderr)
	}
	cli(t, bin, 0, "check", "--closure", srv, c.Root)
	cli(t, bin, 0, "verify", "--deep", srv)

	stop()
	flipByte(t, img)
	r = cli(t, bin, 1, "verify", "--repair", srv)
	if !strings.Contains(r.stdout, "not repaired") || !strings.Contains(r.stdout, "fetching it again failed") {
		t.Errorf("verify --repair with the upstream gone:\n%s%s", r.stdout, r.stderr)
	}
	if r := cli(t, bin, 1, "check", "--closure", srv, c.Root); !strings.Contains(r.stdout, "NAR not cached") {
		t.Errorf("check --closure after a failed repair:\n%s", r.stdout)
	}
	p.terminate(t)
}
