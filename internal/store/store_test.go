package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const narName = "0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar.xz"

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		checkDerived(t, s)
		s.Close()
	})
	return s
}

// checkDerived fails t if the rows derived from the NAR rows (the age
// order, the totals, and the totals in memory) are out of step with them:
// every test that opens a store through openStore checks it at its end.
func checkDerived(t *testing.T, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, f := range checkNARDerived(tx) {
			t.Error(f)
		}
		files, size, err := readNARTotals(tx.Bucket(bucketMeta))
		if err != nil {
			return err
		}
		if files != s.NARCount() || size != s.NARBytes() {
			t.Errorf("totals in memory %d files of %d bytes, in the index %d of %d", s.NARCount(), s.NARBytes(), files, size)
		}
		return nil
	})
	if err != nil && !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		t.Error(err)
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readNAR(t *testing.T, s *Store, name string) ([]byte, error) {
	t.Helper()
	f, err := s.OpenNAR(context.Background(), name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// assertAbsent checks that nothing of name is visible or left on disk.
func assertAbsent(t *testing.T, s *Store, name string) {
	t.Helper()
	if _, err := readNAR(t, s, name); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenNAR: %v, want ErrNotFound", err)
	}
	if has, err := s.HasNAR(context.Background(), name); has || err != nil {
		t.Errorf("HasNAR = %v, %v", has, err)
	}
	if _, err := s.Files().Stat(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NAR file exists: %v", err)
	}
	if tmp := dirEntries(t, filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("temp files left: %q", tmp)
	}
}

func TestWriterCommit(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	w, err := s.CreateNAR(ctx, narName)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("nar "), 10000)
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	// Written but not committed: invisible.
	if _, err := readNAR(t, s, narName); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenNAR before Commit: %v, want ErrNotFound", err)
	}
	if has, _ := s.HasNAR(ctx, narName); has {
		t.Error("HasNAR before Commit")
	}
	// A follower reads the temp file while it is written.
	part, err := w.OpenPartial()
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	if got, err := io.ReadAll(part); err != nil || !bytes.Equal(got, body) {
		t.Errorf("temp file: %d bytes, %v", len(got), err)
	}

	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := readNAR(t, s, narName)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("OpenNAR after Commit: %d bytes, %v", len(got), err)
	}
	if has, err := s.HasNAR(ctx, narName); !has || err != nil {
		t.Errorf("HasNAR after Commit = %v, %v", has, err)
	}
	if tmp := dirEntries(t, filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("temp files left: %q", tmp)
	}
	if err := w.Commit(ctx); err == nil {
		t.Error("second Commit succeeded")
	}
	if err := w.Cancel(); err != nil {
		t.Errorf("Cancel after Commit: %v", err)
	}
	if got, _ := readNAR(t, s, narName); !bytes.Equal(got, body) {
		t.Error("Cancel after Commit removed the NAR")
	}
}

func TestWriterCancel(t *testing.T) {
	tests := []struct {
		name   string
		finish func(*Writer) error
	}{
		{"Cancel", func(w *Writer) error { return w.Cancel() }},
		{"Cancel twice", func(w *Writer) error {
			if err := w.Cancel(); err != nil {
				return err
			}
			return w.Cancel()
		}},
		{"Commit with a cancelled context", func(w *Writer) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := w.Commit(ctx); !errors.Is(err, context.Canceled) {
				return errors.New("Commit did not fail with context.Canceled")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			w, err := s.CreateNAR(context.Background(), narName)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("partial")); err != nil {
				t.Fatal(err)
			}
			if err := tt.finish(w); err != nil {
				t.Fatal(err)
			}
			assertAbsent(t, s, narName)
		})
	}
}

func TestOpenSweepsTemp(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A crash mid-download leaves temp files (and, say, a stray dir).
	w, err := s.CreateNAR(context.Background(), narName)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half a NAR"))
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "stray", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	assertAbsent(t, s, narName)
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	if s, err := Open(dir); !errors.Is(err, ErrLocked) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestOpenSchema(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("999"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); !errors.Is(err, ErrSchema) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open: %v, want ErrSchema", err)
	}
	// The failed Open released the index.
	if _, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, &bolt.Options{Timeout: 1}); err != nil {
		t.Errorf("index still locked after a failed Open: %v", err)
	}
}

func TestMissingFileDropsRow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	w, err := s.CreateNAR(ctx, narName)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("nar"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Files().Remove(narName); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenNAR(ctx, narName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenNAR of a deleted file: %v, want ErrNotFound", err)
	}
	if has, err := s.HasNAR(ctx, narName); has || err != nil {
		t.Errorf("HasNAR = %v, %v: row kept", has, err)
	}
}

func TestIndexPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	text := []byte("StorePath: /nix/store/" + hash + "-x\n")
	src := NARSource{Upstream: "https://up", URL: "https://up/nar/a.nar.xz", Size: 42, SHA256: []byte{1, 2, 3}, Seen: t0}
	if err := s.PutNarInfo(ctx, hash, text, narName, src); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAux(ctx, hash+".ls", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if got, err := s.NarInfo(ctx, hash); err != nil || !bytes.Equal(got, text) {
		t.Errorf("NarInfo: %q, %v", got, err)
	}
	got, err := s.NARSource(ctx, narName)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(src, got); diff != "" {
		t.Errorf("NARSource (-want +got):\n%s", diff)
	}
	if got, err := s.Aux(ctx, hash+".ls"); err != nil || string(got) != "{}" {
		t.Errorf("Aux: %q, %v", got, err)
	}
	for _, err := range []error{
		func() error { _, err := s.NarInfo(ctx, "missing"); return err }(),
		func() error { _, err := s.NARSource(ctx, "missing"); return err }(),
		func() error { _, err := s.Aux(ctx, "missing"); return err }(),
		func() error { _, err := s.OpenNAR(ctx, narName); return err }(),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("lookup of a missing key: %v, want ErrNotFound", err)
		}
	}
}
