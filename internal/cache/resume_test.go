package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// TestResumeAfterRestart: a segmented download cut by the cache closing
// (a restart) is carried on by the next process from where each segment
// stopped, re-hashing what is on disk: the upstream sends the NAR about
// once in all, and what is kept is the NAR.
func TestResumeAfterRestart(t *testing.T) {
	t.Run("ranges", func(t *testing.T) { testResumeAfterRestart(t, false, false) })
	t.Run("ranges no more", func(t *testing.T) { testResumeAfterRestart(t, true, false) })
	t.Run("killed", func(t *testing.T) { testResumeAfterRestart(t, false, true) })
}

// testResumeAfterRestart: killed leaves cache-dir/partial as it was while
// the download ran (what a SIGKILL leaves: the notes saved so far, not the
// one a clean stop writes), and checks that the resume refetches no more
// than what the last note missed.
func testResumeAfterRestart(t *testing.T, noRanges, killed bool) {
	const size = 4 << 20
	dir := t.TempDir()
	up := fakeupstream.New(t)
	// Durable notes every 2 MiB: before the restart one was saved, 1.5 MiB
	// behind; the notes every 256 KiB between them must carry the resume.
	opts := FetchOptions{Connections: 4, Threshold: 1 << 20, Backoff: 10 * time.Millisecond, NoteEvery: 256 << 10}
	file := fakeupstream.RandomBytes(size)
	it := up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	held := make(chan struct{}, 1) // the hold must not wait for the test to listen
	release := make(chan struct{})
	defer close(release)
	// The first segment freezes at 512 KiB; the others complete.
	up.SetFault(it.NARPath, fakeupstream.Fault{Ranges: true, HoldAt: 512 << 10, Hold: func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
	}})

	e := newFetchEnvIn(t, up, dir, 10*time.Second, opts)
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.c.EnsureNAR(context.Background(), ent.NARName, nil) }()
	<-held
	// Wait for the other three segments to land, as the fill sees them.
	deadline := time.Now().Add(20 * time.Second)
	for sent := int64(0); sent < size-(1<<20)+512<<10; sent = up.Sent(it.NARPath) {
		if time.Now().After(deadline) {
			t.Fatalf("upstream sent %d bytes, want the 3 free segments", sent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the client writes what it read
	var partial map[string][]byte
	if killed {
		// The notes are saved off the download path: wait for one that
		// covers all but the last note's worth of what landed.
		landed := int64(size - 1<<20 + 512<<10)
		for {
			partial = readDir(t, filepath.Join(dir, "partial"))
			if noted(partial, ent.NARName, size) >= landed-opts.NoteEvery {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no note covers the %d bytes landed: %d", landed, noted(partial, ent.NARName, size))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.close()
	if err := <-done; err == nil {
		t.Fatal("EnsureNAR finished though the cache closed mid-download")
	}
	if killed {
		writeDir(t, filepath.Join(dir, "partial"), partial)
	}
	_, errNote := os.Stat(filepath.Join(dir, "partial", ent.NARName+".note"))
	_, errMark := os.Stat(filepath.Join(dir, "partial", ent.NARName+".mark"))
	if errNote != nil && (!killed || errMark != nil) {
		// A clean stop saves a durable note; a kill leaves the last one
		// the fetch saved as it went, of either kind.
		t.Fatalf("no progress note after the restart: %v, %v", errNote, errMark)
	}
	first := up.Sent(it.NARPath)
	if noRanges {
		// The upstream no longer takes ranges: the resume fails once and
		// drops the partial, and the next fetch starts over and succeeds.
		up.SetFault(it.NARPath, fakeupstream.Fault{})
		e2 := newFetchEnvIn(t, up, dir, 10*time.Second, opts)
		if err := e2.c.EnsureNAR(context.Background(), ent.NARName, nil); !errors.Is(err, upstream.ErrRangeRefused) {
			t.Fatalf("resume from an upstream without ranges: %v, want ErrRangeRefused", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "partial", ent.NARName)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("partial kept after the upstream refused ranges: %v", err)
		}
		if err := e2.c.EnsureNAR(context.Background(), ent.NARName, nil); err != nil {
			t.Fatalf("fetch after the partial was dropped: %v", err)
		}
		return
	}

	up.SetFault(it.NARPath, fakeupstream.Fault{Ranges: true})
	e2 := newFetchEnvIn(t, up, dir, 10*time.Second, opts)
	if err := e2.c.EnsureNAR(context.Background(), ent.NARName, nil); err != nil {
		t.Fatalf("EnsureNAR after the restart: %v", err)
	}
	f, err := e2.st.OpenNAR(context.Background(), ent.NARName)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, file) {
		t.Fatalf("kept %d bytes, equal to the NAR: false", len(got))
	}
	total := up.Sent(it.NARPath)
	if total > size*11/10 {
		t.Errorf("upstream sent %d bytes in all (%d before the restart), more than 1.1x the NAR's %d", total, first, size)
	}
	if extra := total - size; killed && extra > 3*opts.NoteEvery {
		t.Errorf("upstream sent %d bytes more than the NAR after a kill, more than 3 notes' worth (%d)", extra, 3*opts.NoteEvery)
	}
	if _, err := os.Stat(filepath.Join(dir, "partial", ent.NARName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial file left after commit: %v", err)
	}
}

// TestResumeNoteRejected: a note for another size starts the file over.
func TestResumeNoteRejected(t *testing.T) {
	for _, tc := range []struct {
		note string
		ok   bool
	}{
		{`{"size":10,"segments":[[0,5,5],[5,10,2]]}`, true},
		{`{"size":11,"segments":[[0,5,5],[5,10,2]]}`, false},
		{`{"size":10,"segments":[[0,5,6],[5,10,2]]}`, false},
		{`{"size":10,"segments":[[0,4,4],[5,10,2]]}`, false},
		{`{"size":10,"segments":[]}`, false},
		{`not json`, false},
	} {
		if got := parseNote([]byte(tc.note), 10) != nil; got != tc.ok {
			t.Errorf("parseNote(%s) accepted %v, want %v", tc.note, got, tc.ok)
		}
	}
}

// noted is how many bytes the newest note in files (a partial dir) says
// landed: the mark's if there is one, else the durable note's.
func noted(files map[string][]byte, name string, size int64) int64 {
	b, ok := files[name+".note"]
	if m, mok := files[name+".mark"]; mok {
		_, b, ok = bytes.Cut(m, []byte("\n"))
	}
	n := parseNote(b, size)
	if !ok || n == nil {
		return 0
	}
	var sum int64
	for _, s := range n.Segs {
		sum += s[2]
	}
	return sum
}

// readDir returns the regular files in dir by name.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// writeDir makes dir hold exactly files.
func writeDir(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
