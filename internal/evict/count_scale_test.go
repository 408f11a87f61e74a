//go:build scale

package evict

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkScaleNarInfoCount is what keeping the narinfo count costs at a
// million narinfos: the one Open that counts them (an index from before
// the count was kept), against an Open that reads the count, with each
// one's peak RSS above the start (the index's pages mapped in); and a
// Stats call, as every metrics scrape makes.
func BenchmarkScaleNarInfoCount(b *testing.B) {
	dir := copyIndex(b, upgradedIndex(b), true)
	open := func() (time.Duration, int64) {
		stop := rssSampler()
		start := time.Now()
		st, err := store.Open(dir)
		took := time.Since(start)
		_, total := stop()
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		return took, total
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("narinfo-count")) }); err != nil {
		b.Fatal(err)
	}
	db.Close()
	counting, countingRSS := open()
	reading, readingRSS := open()
	st, err := store.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for b.Loop() {
		s, err := st.Stats(ctx)
		if err != nil || s.NarInfos != scaleNarInfos {
			b.Fatalf("Stats = %+v, %v; want %d narinfos", s, err, scaleNarInfos)
		}
	}
	b.ReportMetric(counting.Seconds(), "s/open-counting")
	b.ReportMetric(float64(countingRSS>>20), "MiB-rss/open-counting")
	b.ReportMetric(reading.Seconds(), "s/open-reading")
	b.ReportMetric(float64(readingRSS>>20), "MiB-rss/open-reading")
}
