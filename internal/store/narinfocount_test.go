package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// rowsCounted checks the count Stats reports and the one persisted against
// the narinfo rows the index holds, counted the slow way.
func rowsCounted(t *testing.T, s *Store, want int) {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rows, persisted int
	must(t, s.db.View(func(tx *bolt.Tx) error {
		rows = tx.Bucket(bucketNarInfo).Stats().KeyN
		persisted = int(binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyNarInfoCount)))
		return nil
	}))
	if st.NarInfos != want || persisted != want || rows != want {
		t.Errorf("Stats says %d narinfos, the index keeps %d, it has %d rows; want %d", st.NarInfos, persisted, rows, want)
	}
}

// TestNarInfoCount: every writer of narinfo rows keeps the count exact, in
// memory and in the index, across overwrites, uploads, pruning, repair and
// a restart.
func TestNarInfoCount(t *testing.T) {
	ctx := context.Background()
	c := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	s, err := OpenWith(dir, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	uploaded := func(id int) NARSource { return NARSource{Hash: pruneHash(id), Upstream: UploadedUpstream} }
	text := func(id int) []byte {
		return fmt.Appendf(nil, "StorePath: /nix/store/%s-p\nURL: nar/%s\nCompression: none\n", pruneHash(id), pruneNAR(id))
	}
	for _, step := range []struct {
		name string
		do   func(t *testing.T)
		want int
	}{
		{"empty", func(t *testing.T) {}, 0},
		{"store", func(t *testing.T) { putPath(t, s, 1); putPath(t, s, 2); putPath(t, s, 3) }, 3},
		{"overwrite", func(t *testing.T) { putPath(t, s, 2) }, 3},
		{"claim new", func(t *testing.T) {
			commitNAR(t, s, pruneNAR(4), 10)
			must(t, s.ClaimUpload(ctx, pruneHash(4), text(4), pruneNAR(4), uploaded(4)))
		}, 4},
		{"claim over a stored one", func(t *testing.T) {
			commitNAR(t, s, pruneNAR(3), 10)
			must(t, s.ClaimUpload(ctx, pruneHash(3), text(3), pruneNAR(3), uploaded(3)))
		}, 4},
		{"claim without its NAR", func(t *testing.T) {
			err := s.ClaimUpload(ctx, pruneHash(5), text(5), pruneNAR(5), uploaded(5))
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("claim without NAR: %v, want ErrNotFound", err)
			}
		}, 4},
		{"repair drops a missing NAR", func(t *testing.T) {
			must(t, s.files.Remove(pruneNAR(4)))
			must(t, s.DropNAR(ctx, pruneNAR(4), nil))
		}, 4},
		{"restart", func(t *testing.T) {
			must(t, s.Close())
			s, err = OpenWith(dir, Options{Now: c.now})
			must(t, err)
		}, 4},
		{"prune", func(t *testing.T) {
			c.t = c.t.Add(40 * day)
			keep := func(string) bool { return false }
			// 9 was never stored, 1 twice in the batch: neither counts.
			n, all, err := s.PruneNarInfos(ctx, []string{pruneHash(9), pruneHash(1), pruneHash(2), pruneHash(1)}, c.t.Add(-30*day), keep)
			if err != nil || n != 2 || !all {
				t.Fatalf("PruneNarInfos = %d, %v, %v; want 2, true", n, all, err)
			}
		}, 2},
		{"store after prune", func(t *testing.T) { putPath(t, s, 1) }, 3},
		{"restart again", func(t *testing.T) {
			must(t, s.Close())
			s, err = OpenWith(dir, Options{Now: c.now})
			must(t, err)
		}, 3},
	} {
		step.do(t)
		if t.Failed() {
			t.Fatalf("after %s", step.name)
		}
		rowsCounted(t, s, step.want)
		if t.Failed() {
			t.Fatalf("after %s", step.name)
		}
	}
}

// TestNarInfoCountConcurrent: writers racing on the same and on distinct
// hashes count each row once (commit handlers run in any order).
func TestNarInfoCountConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 10 {
				putPath(t, s, i)          // the same ten in every goroutine
				putPath(t, s, 100+g*10+i) // ten of its own
			}
		})
	}
	wg.Wait()
	rowsCounted(t, s, 10+4*10)
}

// TestNarInfoCountUpgrade: an index from before the count was kept, with
// or without the rest of what Open adds, is counted once at Open, and the
// count written.
func TestNarInfoCountUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  func(tx *bolt.Tx) error
	}{
		{"no count", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyNarInfoCount) }},
		{"no meta", func(tx *bolt.Tx) error { // what the scale tests build
			for _, b := range allBuckets {
				if string(b) != string(bucketNarInfo) && tx.Bucket(b) != nil {
					if err := tx.DeleteBucket(b); err != nil {
						return err
					}
				}
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			for id := range 5 {
				putPath(t, s, id)
			}
			must(t, s.Close())
			db, err := bolt.Open(dir+"/index.db", 0o644, nil)
			must(t, err)
			must(t, db.Update(tc.old))
			must(t, db.Close())
			s = openStore(t, dir)
			rowsCounted(t, s, 5)
			putPath(t, s, 5)
			rowsCounted(t, s, 6)
		})
	}
}
