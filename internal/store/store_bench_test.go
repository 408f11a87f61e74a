package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// benchStore opens a store in a temp dir holding n narinfos of a realistic
// size (~600 bytes) and one small NAR file, and returns it with the hashes.
func benchStore(b *testing.B, n int) (*store.Store, []string, string) {
	b.Helper()
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	text := make([]byte, 600)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	hashes := make([]string, n)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("%032d", i)
		nar := fmt.Sprintf("%052d.nar", i)
		if err := st.PutNarInfo(ctx, hashes[i], text, nar, store.NARSource{URL: "http://up/" + nar}); err != nil {
			b.Fatal(err)
		}
	}
	name := fmt.Sprintf("%052d.nar.zst", 1)
	w, err := st.CreateNAR(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	return st, hashes, name
}

// BenchmarkNarInfoHit is the index half of a narinfo hit: one bbolt read
// transaction and a copy of the row out of the mmap.
func BenchmarkNarInfoHit(b *testing.B) {
	st, hashes, _ := benchStore(b, 256)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := st.NarInfo(ctx, hashes[i%len(hashes)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkNarInfoHitParallel is the same from every P at once, as under
// wrk: bbolt read transactions share the mmap lock.
func BenchmarkNarInfoHitParallel(b *testing.B) {
	st, hashes, _ := benchStore(b, 256)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := st.NarInfo(ctx, hashes[i%len(hashes)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkNarInfoMiss is the index half of a miss, before any upstream.
func BenchmarkNarInfoMiss(b *testing.B) {
	st, _, _ := benchStore(b, 256)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.NarInfo(ctx, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"); err == nil {
			b.Fatal("found")
		}
	}
}

// BenchmarkOpenNARHit is the store half of a NAR hit: index row, open(2).
func BenchmarkOpenNARHit(b *testing.B) {
	st, _, name := benchStore(b, 10)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		f, err := st.OpenNAR(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
