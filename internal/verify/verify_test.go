package verify_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// TestVerifyAndRepair breaks a filled cache in every way verify knows,
// beside a download in progress, and checks that verify names each bad
// entry and nothing else, that --repair mends them, and that a client then
// gets the dropped NARs again, fetched from the upstream, byte for byte.
func TestVerifyAndRepair(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good, goodName := e.fill(t, fakeupstream.Path{Name: "good", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	flipped, flippedName := e.fill(t, fakeupstream.Path{Name: "flipped", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	truncated, truncatedName := e.fill(t, fakeupstream.Path{Name: "truncated", File: fakeupstream.RandomBytes(5000), Compression: "zstd"})
	missing, missingName := e.fill(t, fakeupstream.Path{Name: "missing", File: fakeupstream.RandomBytes(5000), Compression: "none"})

	bad := bytes.Clone(flipped.File)
	bad[2500] ^= 1
	writeFile(t, e.narPath(flippedName), bad)
	writeFile(t, e.narPath(truncatedName), truncated.File[:4000])
	if err := os.Remove(e.narPath(missingName)); err != nil {
		t.Fatal(err)
	}
	unindexed := fakeupstream.RandomHash() + fakeupstream.RandomHash()[:20] + ".nar.xz"
	writeFile(t, e.narPath(unindexed), []byte("no row names me"))
	writeFile(t, filepath.Join(e.Dir, "nar", "ab", "junk.txt"), []byte("junk"))
	writeFile(t, filepath.Join(e.Dir, "tmp", unindexed+".12345"), []byte("left by a crash"))

	// A download frozen half-way: its temp file is no stray.
	held := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // a failed test must not hang
	live := e.Upstream.Add(fakeupstream.Path{Name: "live", File: fakeupstream.RandomBytes(100_000), Compression: "xz"})
	e.Upstream.SetFault(live.NARPath, fakeupstream.Fault{HoldAt: 50_000, Hold: func() { close(held); <-release }})
	liveEntry, err := e.Cache.Lookup(ctx, live.Hash)
	if err != nil {
		t.Fatal(err)
	}
	liveDone := make(chan []byte)
	go func() { liveDone <- e.get(t, "/nar/"+liveEntry.NARName) }()
	<-held
	waitFor(t, func() bool { return len(dirNames(t, filepath.Join(e.Dir, "tmp"))) == 2 })

	st := e.run(t, verify.Request{})
	want := map[string]string{
		flippedName:                              verify.KindHash,
		truncatedName:                            verify.KindSize,
		missingName:                              verify.KindMissing,
		"nar/" + unindexed[:2] + "/" + unindexed: verify.KindUnindexed,
		"nar/ab/junk.txt":                        verify.KindStray,
		"tmp/" + unindexed + ".12345":            verify.KindTemp,
	}
	if diff := cmp.Diff(want, kinds(st)); diff != "" {
		t.Fatalf("problems (-want +got):\n%s\n%+v", diff, st.Problems)
	}
	if st.Sound() || st.Unrepaired != 6 || st.State != verify.StateDone {
		t.Errorf("status: sound %v, unrepaired %d, state %s", st.Sound(), st.Unrepaired, st.State)
	}
	for _, p := range st.Problems {
		if p.Repaired || p.Detail == "" {
			t.Errorf("%s: repaired %v, detail %q", p.Name, p.Repaired, p.Detail)
		}
	}
	if got, _ := os.ReadFile(e.narPath(flippedName)); !bytes.Equal(got, bad) {
		t.Error("verify without --repair changed a file")
	}
	if st.FilesDone != 4 || st.Files != 4 {
		t.Errorf("files %d of %d, want 4 of 4", st.FilesDone, st.Files)
	}

	st = e.run(t, verify.Request{Repair: true})
	if diff := cmp.Diff(want, kinds(st)); diff != "" {
		t.Fatalf("repair pass problems (-want +got):\n%s", diff)
	}
	for _, p := range st.Problems {
		if !p.Repaired {
			t.Errorf("%s not repaired: %s", p.Name, p.RepairError)
		}
	}
	if !st.Sound() {
		t.Errorf("repair pass not sound: %+v", st)
	}
	// (Not --deep: the fake upstream's "xz" files are random bytes.)
	if st = e.run(t, verify.Request{}); !st.Sound() || st.ProblemsTotal != 0 {
		t.Errorf("after repair: %+v", st)
	}
	for _, p := range []string{"nar/ab/junk.txt", "tmp/" + unindexed + ".12345", "nar/" + unindexed[:2] + "/" + unindexed} {
		if _, err := os.Stat(filepath.Join(e.Dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}

	// The dropped NARs come back from the upstream, identical; their
	// narinfos were kept, so the upstream is not asked for those again.
	for _, c := range []struct {
		it   *fakeupstream.Item
		name string
	}{{flipped, flippedName}, {truncated, truncatedName}, {missing, missingName}, {good, goodName}} {
		infos := e.Upstream.Count(c.it.NarInfoPath)
		if got := e.get(t, "/nar/"+c.name); !bytes.Equal(got, c.it.File) {
			t.Errorf("%s after repair: %d bytes, not the upstream's", c.it.StorePath, len(got))
		}
		wantNARs := 2
		if c.it == good {
			wantNARs = 1 // never dropped
		}
		if n := e.Upstream.Count(c.it.NARPath); n != wantNARs {
			t.Errorf("%s: upstream served the NAR %d times, want %d", c.it.StorePath, n, wantNARs)
		}
		if got := e.get(t, "/"+c.it.Hash+".narinfo"); len(got) == 0 || e.Upstream.Count(c.it.NarInfoPath) != infos {
			t.Errorf("%s: narinfo not served from the cache after repair", c.it.StorePath)
		}
	}
	releaseOnce.Do(func() { close(release) })
	if got := <-liveDone; !bytes.Equal(got, live.File) {
		t.Errorf("the download verify ran beside got %d bytes, want %d", len(got), len(live.File))
	}
	e.Settle(t)
	if st = e.run(t, verify.Request{}); !st.Sound() || st.Files != 5 {
		t.Errorf("final pass: %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
