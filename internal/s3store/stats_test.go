package s3store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

// TestStats: Stats counts every operation Observe is told of.
func TestStats(t *testing.T) {
	srv := s3test.Start(t)
	loc, err := ParseURL(srv.URL(srv.Bucket(t), "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told, errs int64
	observe := func(_, result string, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		told++
		if result == "error" {
			errs++
		}
	}
	b, err := Open(context.Background(), loc, Options{SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Credentials: srv.Credentials(), PartSize: testPartSize, Observe: observe})
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Create("0stats.nar")
	if err != nil {
		t.Fatal(err)
	}
	writeInChunks(t, p, randomBytes(1000))
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat("1missing.nar"); err == nil {
		t.Fatal("Stat of a missing NAR found it")
	}
	got := b.Stats()
	mu.Lock()
	defer mu.Unlock()
	if got.Requests != told || got.Errors != errs || told < 3 || got.Latency <= 0 {
		t.Errorf("Stats = %+v; Observe was told of %d operations, %d errors", got, told, errs)
	}
}

// TestTallyErrors: only failures count as errors, not a not-found or a
// lost conditional write.
func TestTallyErrors(t *testing.T) {
	var tl tally
	for _, r := range []string{"ok", "not-found", "conflict", "error"} {
		tl.add(r, time.Millisecond)
	}
	if got, want := tl.get(), (Stats{Requests: 4, Errors: 1, Latency: 4 * time.Millisecond}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
