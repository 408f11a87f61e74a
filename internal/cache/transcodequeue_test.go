package cache

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// waitCompression waits until hash's narinfo says compression.
func (e *zstdEnv) waitCompression(t *testing.T, hash, compression string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); e.narinfo(t, hash).Compression != compression; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("narinfo %s still says %s, want %s", hash, e.narinfo(t, hash).Compression, compression)
		}
	}
}

// A NAR fetched while another client's download goes on is recompressed
// only once the clients pause: the first clients of a closure are not
// slowed by the recompression of its earlier NARs.
func TestRecompressWaitsForQuiet(t *testing.T) {
	e := newZstdEnvOpts(t, Options{RecompressGrace: time.Hour, RecompressQuiet: 50 * time.Millisecond, RecompressMaxDefer: time.Hour})
	nar := testNAR(t, 256<<10)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	end := e.c.active.begin() // a client still downloading another NAR
	e.get(t, e.narinfo(t, it.Hash).URL)
	for range 20 {
		time.Sleep(10 * time.Millisecond)
		if got := e.narinfo(t, it.Hash).Compression; got != "xz" {
			t.Fatalf("recompressed (%s) while a client was downloading", got)
		}
	}
	if n := e.c.queue.pending(); n != 0 && n != 1 {
		t.Fatalf("%d recompressions queued, want at most 1", n)
	}
	end()
	e.waitCompression(t, it.Hash, "zstd")
	if got := testutil.ToFloat64(e.m.Recompressed.WithLabelValues("done")); got != 1 {
		t.Fatalf("recompressed done = %v", got)
	}
}

// Clients that never pause defer a recompression by RecompressMaxDefer at
// most.
func TestRecompressMaxDefer(t *testing.T) {
	e := newZstdEnvOpts(t, Options{RecompressGrace: time.Hour, RecompressQuiet: time.Hour, RecompressMaxDefer: 100 * time.Millisecond})
	nar := testNAR(t, 256<<10)
	sum := sha256.Sum256(nar)
	it := e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	end := e.c.active.begin()
	defer end()
	e.get(t, e.narinfo(t, it.Hash).URL)
	e.waitCompression(t, it.Hash, "zstd")
}

func TestActivityWaitIdle(t *testing.T) {
	a := newActivity()
	ctx := context.Background()
	far := time.Now().Add(time.Hour)
	// Never active: idle at once.
	if err := a.waitIdle(ctx, time.Hour, far); err != nil {
		t.Fatal(err)
	}
	end1, end2 := a.begin(), a.begin()
	done := make(chan error, 1)
	go func() { done <- a.waitIdle(ctx, 20*time.Millisecond, far) }()
	end1()
	end1() // a second call is a no-op
	select {
	case err := <-done:
		t.Fatalf("idle (%v) with one client still active", err)
	case <-time.After(100 * time.Millisecond):
	}
	end2()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not idle 10 s after the last client ended")
	}
	// The deadline ends the wait whatever the clients do.
	defer a.begin()()
	if err := a.waitIdle(ctx, time.Hour, time.Now().Add(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.waitIdle(cctx, time.Hour, far); err == nil {
		t.Fatal("waitIdle ignored its context")
	}
}
