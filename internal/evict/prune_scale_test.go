//go:build scale

package evict

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	bolt "go.etcd.io/bbolt"
)

// pruneScaleIndex writes a synthetic index of 1,000,000 narinfos in
// Nix's format (URL, five References) with their NAR sources, 200,000 of
// them with their NAR on disk, none served since 2025: all others are
// stale, and one pruning round considers its maximum.
func pruneScaleIndex(b *testing.B) string {
	dir := b.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.NoSync = true
	start := time.Now()
	stored := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	hash := func(i int) string { return fmt.Sprintf("%032d", i) }
	sig := strings.Repeat("A", 88)
	const batch = 20000
	for lo := 0; lo < scaleNarInfos; lo += batch {
		err := db.Update(func(tx *bolt.Tx) error {
			ni, _ := tx.CreateBucketIfNotExists([]byte("narinfo"))
			srcs, _ := tx.CreateBucketIfNotExists([]byte("narsrc"))
			nars, _ := tx.CreateBucketIfNotExists([]byte("nar"))
			for i := lo; i < lo+batch; i++ {
				h, nar := hash(i), fmt.Sprintf("%052d.nar.xz", i)
				var refs []string
				for _, d := range []int{2, 3, 5, 7, 11} {
					if j := i / d; j != i {
						refs = append(refs, hash(j)+"-dep")
					}
				}
				text := "StorePath: /nix/store/" + h + "-pkg-" + strconv.Itoa(i) + "\nURL: nar/" + nar +
					"\nCompression: xz\nFileHash: sha256:" + strings.Repeat("1", 52) + "\nFileSize: 409600\nNarHash: sha256:" +
					strings.Repeat("2", 52) + "\nNarSize: 1000000\nReferences: " + strings.Join(refs, " ") +
					"\nDeriver: " + h + "-pkg.drv\nSig: cache.nixos.org-1:" + sig + "\n"
				if err := ni.Put([]byte(h), []byte(text)); err != nil {
					return err
				}
				if err := putScaleNAR(srcs, nars, i, h, nar, stored, time.Time{}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// Stamped since 2025: every narinfo counts as last served then.
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		return meta.Put([]byte("served-since"), binary.BigEndian.AppendUint32(nil, uint32(stored.Unix()/86400)))
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "index.db"))
	b.Logf("built index: %d narinfos, %d NAR rows, %d MiB, in %s", scaleNarInfos, scaleNARs, st.Size()>>20, time.Since(start).Round(time.Second))
	return dir
}

// BenchmarkScalePrune is one pruning round over 1,000,000 narinfos: two
// walks, and 32,768 narinfos deleted in batches of 1,024.
func BenchmarkScalePrune(b *testing.B) {
	dir := pruneScaleIndex(b)
	st, err := store.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	e := New(st, Config{})
	ctx := context.Background()
	for b.Loop() {
		stop := rssSampler()
		start := time.Now()
		rep, err := e.Prune(ctx)
		took := time.Since(start)
		anon, total := stop()
		if err != nil {
			b.Fatal(err)
		}
		if rep.Stale != pruneMax {
			b.Fatalf("considered %d, want %d: %+v", rep.Stale, pruneMax, rep)
		}
		b.ReportMetric(took.Seconds(), "s/round")
		b.ReportMetric(float64(anon)/(1<<20), "MiB-anon-peak")
		b.ReportMetric(float64(total)/(1<<20), "MiB-rss-peak")
		b.Logf("round: %+v in %s; peak anonymous RSS +%d MiB, total +%d MiB", rep, took.Round(time.Millisecond), anon>>20, total>>20)
	}
}

// BenchmarkScalePruneDrain drains the backlog of the same index as the
// background loop does: rounds back to back while prunePace says the next
// comes soon, until it falls back to hourly. The 800,000 stale narinfos
// are chained (each references those at a half, a third, ... of its
// number), so the first rounds, over narinfos needed by stale ones
// outside their window, prune nothing. The pauses between rounds (as
// long as each round took) are added to the drain time, not slept.
func BenchmarkScalePruneDrain(b *testing.B) {
	for range b.N { // each drains its own index: not b.Loop, which cannot stop its timer
		b.StopTimer()
		dir := pruneScaleIndex(b)
		st, err := store.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		e := New(st, Config{})
		ctx := context.Background()
		b.StartTimer()
		var busy, rest time.Duration
		rounds, pruned, fruitless := 0, 0, 0
		for {
			start := time.Now()
			rep, err := e.Prune(ctx)
			took := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			busy += took
			rounds++
			pruned += rep.Pruned
			if rep.Pruned == 0 {
				fruitless++
			}
			if rounds%5 == 1 {
				b.Logf("round %d: %+v in %s", rounds, rep, took.Round(time.Millisecond))
			}
			w := e.pruneWait()
			if w >= pruneEvery {
				break
			}
			rest += w
		}
		b.StopTimer()
		st.Close()
		if want := scaleNarInfos - scaleNARs; pruned != want {
			b.Fatalf("pruned %d of %d stale narinfos in %d rounds", pruned, want, rounds)
		}
		b.ReportMetric(float64(rounds), "rounds")
		b.ReportMetric(busy.Seconds(), "s-busy")
		b.ReportMetric((busy + rest).Seconds(), "s-drain")
		b.Logf("drained %d stale narinfos in %d rounds (%d pruned nothing): %s of rounds, %s with the pauses between them",
			pruned, rounds, fruitless, busy.Round(time.Second), (busy + rest).Round(time.Second))
	}
}
