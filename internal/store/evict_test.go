package store

import (
	"context"
	"errors"
	"io/fs"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func commitNAR(t *testing.T, s *Store, name string, size int) {
	t.Helper()
	w, err := s.CreateNAR(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, size))
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestEvictionResumedAtOpen: a crash after an eviction recorded its intent
// and before it deleted the rows is finished by the next Open: no row
// without its file, no file without its row, totals right.
func TestEvictionResumedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitNAR(t, s, narName, 1000)
	const other = "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	commitNAR(t, s, other, 500)
	// The intent, as EvictNARs records it, then the "crash".
	err = s.db.Update(func(tx *bolt.Tx) error {
		var r narRow
		if err := jsonGet(tx.Bucket(bucketNAR), narName, &r); err != nil {
			return err
		}
		stamp, _ := r.Stored.MarshalBinary()
		return tx.Bucket(bucketEvicting).Put([]byte(narName), stamp)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if _, err := s.Files().Stat(narName); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file of the interrupted eviction: %v", err)
	}
	if has, _ := s.HasNAR(context.Background(), narName); has {
		t.Error("row of the interrupted eviction kept")
	}
	if st, _ := s.Stats(context.Background()); st.NARs != 1 || st.NARBytes != 500 {
		t.Errorf("stats after resume: %+v", st)
	}
}

// TestEvictLeavesRefill: a NAR committed again (a refill) between the
// intent and the row's deletion keeps its new row.
func TestEvictLeavesRefill(t *testing.T) {
	s := openStore(t, t.TempDir())
	commitNAR(t, s, narName, 100)
	var r narRow
	s.db.View(func(tx *bolt.Tx) error { return jsonGet(tx.Bucket(bucketNAR), narName, &r) })
	stale, _ := r.Stored.Add(-time.Second).MarshalBinary()
	freed, err := s.finishEvictions(map[string][]byte{narName: stale})
	if err != nil || freed != 0 {
		t.Fatalf("finishEvictions = %d, %v", freed, err)
	}
	if has, _ := s.HasNAR(context.Background(), narName); !has {
		t.Error("a refilled NAR's row was deleted")
	}
}

func TestAccessFlushedAndOrdered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitNAR(t, s, narName, 10)
	f, err := s.OpenNAR(ctx, narName)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	served, _ := s.access.get(narName)
	if err := s.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	s = openStore(t, dir)
	var got time.Time
	s.WalkNARs(ctx, false, func(u *NARUse) error { got = u.Access; return nil })
	if !got.Equal(served) {
		t.Errorf("access after reopen %v, want %v", got, served)
	}
}
