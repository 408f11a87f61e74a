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

// TestEvictionResumedAtOpen: a crash after an eviction deleted its rows
// and before it removed the files is finished by the next Open: no file
// without its row, totals right.
func TestEvictionResumedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitNAR(t, s, narName, 1000)
	const other = "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	commitNAR(t, s, other, 500)
	const second = "2123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	commitNAR(t, s, second, 300)
	// A record of one file, as verify's repairs and earlier versions
	// write them.
	const single = "3123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	commitNAR(t, s, single, 200)
	// The rows go, then the "crash" before the files are removed.
	if _, gone, err := s.evictRows([]string{narName, second}); err != nil || len(gone) != 2 {
		t.Fatalf("evictRows = %v, %v", gone, err)
	}
	if err := s.dropNAR(single); err != nil {
		t.Fatal(err)
	}
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEvicting).Put([]byte(single), nil) })
	if _, err := s.Files().Stat(narName); err != nil {
		t.Fatalf("the file went with the row: %v", err)
	}
	s.Close()
	s = openStore(t, dir)
	for _, name := range []string{narName, second, single} {
		if _, err := s.Files().Stat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("file of the interrupted eviction %s: %v", name, err)
		}
	}
	if _, err := s.Files().Stat(other); err != nil {
		t.Errorf("another NAR's file: %v", err)
	}
	if st, _ := s.Stats(context.Background()); st.NARs != 1 || st.NARBytes != 500 {
		t.Errorf("stats after resume: %+v", st)
	}
	var records int
	s.db.View(func(tx *bolt.Tx) error { records = tx.Bucket(bucketEvicting).Stats().KeyN; return nil })
	if records != 0 {
		t.Errorf("%d eviction records left", records)
	}
}

// TestEvictLeavesRefill: a NAR committed again (a refill) between its row's
// eviction and its file's removal keeps its new file and row.
func TestEvictLeavesRefill(t *testing.T) {
	s := openStore(t, t.TempDir())
	commitNAR(t, s, narName, 100)
	_, gone, err := s.evictRows([]string{narName})
	if err != nil {
		t.Fatal(err)
	}
	commitNAR(t, s, narName, 200) // the refill
	if err := s.removeEvicted(gone); err != nil {
		t.Fatal(err)
	}
	if size, err := s.Files().Stat(narName); err != nil || size != 200 {
		t.Errorf("refilled file: %d, %v", size, err)
	}
	if st, _ := s.Stats(context.Background()); st.NARs != 1 || st.NARBytes != 200 {
		t.Errorf("stats %+v", st)
	}
}

// TestEvictRecordsDropped: an eviction's record stays while its files are
// being removed and goes with the next eviction once they are.
func TestEvictRecordsDropped(t *testing.T) {
	s := openStore(t, t.TempDir())
	const other = "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	commitNAR(t, s, narName, 100)
	commitNAR(t, s, other, 100)
	records := func() (n int) {
		s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketEvicting).Stats().KeyN; return nil })
		return n
	}
	_, gone, err := s.evictRows([]string{narName})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.evictRows(nil); err != nil || records() != 1 {
		t.Errorf("records while the file is being removed: %d (%v), want 1", records(), err)
	}
	if err := s.removeEvicted(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EvictNARs(context.Background(), []string{other}); err != nil || records() != 1 {
		t.Errorf("records after the next eviction: %d (%v), want its own alone", records(), err)
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
	must(t, s.NARsByAge(ctx, func(u *NARUse) (bool, error) { got = time.Unix(0, u.Access); return false, nil }))
	if !got.Equal(served) {
		t.Errorf("access after reopen %v, want %v", got, served)
	}
}
