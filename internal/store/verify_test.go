package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// narFile is where the local directory keeps the NAR file called name.
func narFile(s *Store, name string) string {
	return filepath.Join(s.Dir(), "nar", name[:2], name)
}

func writeNAR(t *testing.T, s *Store, name string, body []byte) {
	t.Helper()
	w, err := s.CreateNAR(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestDropNARLeavesANewerFile: a repair must remove only the file verify
// read, never one a download committed under the same name since.
func TestDropNARLeavesANewerFile(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	writeNAR(t, s, narName, []byte("bad bytes"))
	old, err := os.Stat(narFile(s, narName))
	if err != nil {
		t.Fatal(err)
	}
	writeNAR(t, s, narName, []byte("fresh bytes")) // a refetch renamed over it
	if err := s.DropNAR(ctx, narName, old); !errors.Is(err, ErrChanged) {
		t.Fatalf("DropNAR of a replaced file: %v, want ErrChanged", err)
	}
	if got, err := readNAR(t, s, narName); err != nil || string(got) != "fresh bytes" {
		t.Fatalf("after a refused drop: %q, %v", got, err)
	}
	cur, _ := os.Stat(narFile(s, narName))
	if err := s.DropNAR(ctx, narName, cur); err != nil {
		t.Fatalf("DropNAR: %v", err)
	}
	assertAbsent(t, s, narName)
	if st, _ := s.Stats(ctx); st.NARs != 0 || st.NARBytes != 0 {
		t.Errorf("totals after drop: %+v", st)
	}
	if left := dirEntries(t, filepath.Join(s.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ after drop: %v", left)
	}
}

// TestStraysAndLiveWriters: files without rows and temp files are strays,
// unless a writer of this process is on them; one indexed after it was
// found is not removed.
func TestStraysAndLiveWriters(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	w, err := s.CreateNAR(ctx, narName) // in progress
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	other := "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	os.MkdirAll(filepath.Dir(narFile(s, other)), 0o755)
	os.WriteFile(narFile(s, other), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(s.Dir(), "tmp", other+".99"), []byte("y"), 0o644)
	var got []Stray
	collect := func() {
		got = nil
		err := s.Strays(ctx, narinfo.ValidNARName, func(st Stray) error { got = append(got, st); return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	collect()
	want := []string{"unindexed nar/11/" + other, "temp tmp/" + other + ".99"}
	var kinds []string
	for _, st := range got {
		kinds = append(kinds, st.Kind+" "+st.Path)
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("strays (-want +got):\n%s", diff)
	}
	// The unindexed file gets its row (a commit landed): not removed.
	writeNAR(t, s, other, []byte("x"))
	if err := s.RemoveStray(ctx, got[0]); !errors.Is(err, ErrChanged) {
		t.Errorf("RemoveStray of a file indexed since: %v, want ErrChanged", err)
	}
	if _, err := readNAR(t, s, other); err != nil {
		t.Errorf("the indexed file went: %v", err)
	}
	if err := s.RemoveStray(ctx, got[1]); err != nil {
		t.Errorf("RemoveStray(temp): %v", err)
	}
	collect()
	if len(got) != 0 {
		t.Errorf("strays left: %+v", got)
	}
}

// TestNAREntriesPagesAndOldRows: pages cover every row once, in order, and
// a source row written without NarHash gets it from its narinfo.
func TestNAREntriesPagesAndOldRows(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	nh := "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	text := []byte("StorePath: /nix/store/" + hash + "-x\nURL: nar/" + narName + "\nCompression: xz\nNarHash: " + nh + "\nNarSize: 7\nReferences: \n")
	if err := s.PutNarInfo(ctx, hash, text, narName, NARSource{Hash: hash, SHA256: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	names := []string{narName, "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar", "2123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"}
	for _, n := range names {
		writeNAR(t, s, n, []byte("abc"))
	}
	var seen []string
	after := ""
	for {
		page, err := s.NAREntries(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seen = append(seen, e.Name)
			if e.Size != 3 || e.Err != nil {
				t.Errorf("%s: size %d, err %v", e.Name, e.Size, e.Err)
			}
			if e.Name == narName && (!e.HasSource || e.Source.NarSize != 7 || e.Source.Compression != "xz" || len(e.Source.NarHash) != 32) {
				t.Errorf("old source row not filled from its narinfo: %+v", e.Source)
			}
			if e.Name != narName && e.HasSource {
				t.Errorf("%s has a source", e.Name)
			}
		}
		after = page[len(page)-1].Name
	}
	if diff := cmp.Diff(names, seen); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if faults, err := s.CheckIndex(ctx); err != nil || len(faults) != 0 {
		t.Errorf("CheckIndex: %v, %v", faults, err)
	}
}

// TestCrashBetweenRenameAndRow: a kill after a NAR file is renamed into
// place but before its index row leaves an intent; Open indexes the file
// then (and forgets an intent whose file never arrived).
func TestCrashBetweenRenameAndRow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	other := "1123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar"
	for _, n := range []string{narName, other} {
		if err := s.markCommitting(n); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Dir(narFile(s, narName)), 0o755)
	os.WriteFile(narFile(s, narName), []byte("renamed, not indexed"), 0o644) // what the rename left
	s.Close()

	s = openStore(t, dir)
	if got, err := readNAR(t, s, narName); err != nil || string(got) != "renamed, not indexed" {
		t.Errorf("after Open: %q, %v", got, err)
	}
	if st, _ := s.Stats(ctx); st.NARs != 1 || st.NARBytes != 20 {
		t.Errorf("totals: %+v, want 1 file of 20 bytes", st)
	}
	var strays []Stray
	s.Strays(ctx, narinfo.ValidNARName, func(st Stray) error { strays = append(strays, st); return nil })
	if len(strays) != 0 {
		t.Errorf("strays: %+v", strays)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketCommitting).Stats().KeyN; n != 0 {
			t.Errorf("%d commit intents left", n)
		}
		return nil
	})
}

// TestStraysSkipEvicting: between an eviction deleting a NAR's row and
// removing its file, the file is no stray. verify racing an eviction
// (the recompression's grace ending, a background pass) reported it as
// "unindexed" before.
func TestStraysSkipEvicting(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	writeNAR(t, s, narName, []byte("a NAR being evicted"))
	_, gone, err := s.evictRows([]string{narName})
	if err != nil || len(gone) != 1 {
		t.Fatalf("evictRows: %v, %v", gone, err)
	}
	if _, err := os.Stat(narFile(s, narName)); err != nil {
		t.Fatalf("the file went with its row: %v", err)
	}
	var strays []Stray
	if err := s.Strays(ctx, narinfo.ValidNARName, func(st Stray) error {
		strays = append(strays, st)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(strays) != 0 {
		t.Fatalf("strays while evicting: %+v", strays)
	}
	if err := s.removeEvicted(gone); err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, s, narName)
}

// TestStraysRaceWriteAndEvict: a NAR file being committed or evicted while
// Strays walks is never an unindexed stray, whatever the interleaving:
// verify --deep racing the recompression's grace reported the original as
// "a NAR file no index row names" now and then on a loaded machine.
func TestStraysRaceWriteAndEvict(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	stop := make(chan struct{})
	walked := make(chan []Stray)
	go func() {
		var strays []Stray
		defer func() { walked <- strays }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Strays(ctx, narinfo.ValidNARName, func(st Stray) error {
				strays = append(strays, st)
				return nil
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 100 {
		writeNAR(t, s, narName, []byte("a NAR written and evicted"))
		if _, err := s.EvictNARs(ctx, []string{narName}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if strays := <-walked; len(strays) != 0 {
		t.Fatalf("%d strays reported while writing and evicting, first %+v", len(strays), strays[0])
	}
}
