package prefetch_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
)

func TestHashOf(t *testing.T) {
	const h = "0123456789abcdfghijklmnpqrsvwxyz"
	tests := []struct {
		arg     string
		want    string
		wantErr bool
	}{
		{arg: h, want: h},
		{arg: h + "-hello-2.12", want: h},
		{arg: "/nix/store/" + h + "-hello-2.12", want: h},
		{arg: "/nix/store/" + h + "-hello-2.12/", want: h},
		{arg: "", wantErr: true},
		{arg: "hello", wantErr: true},
		{arg: "/nix/store/" + h, wantErr: true},                  // no name
		{arg: "/gnu/store/" + h + "-hello", wantErr: true},       // another store
		{arg: "0123456789abcdefghijklmnpqrsvwxy", wantErr: true}, // 'e' is not Nix base32
		{arg: "/nix/store/" + h[:31] + "-hello", wantErr: true},  // short hash
	}
	for _, tt := range tests {
		got, err := prefetch.HashOf(tt.arg)
		if tt.wantErr {
			if !errors.Is(err, prefetch.ErrBadPath) {
				t.Errorf("HashOf(%q) = %q, %v; want ErrBadPath", tt.arg, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("HashOf(%q) = %q, %v; want %q", tt.arg, got, err, tt.want)
		}
	}
}

func TestStartRejects(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	for _, req := range []prefetch.Request{
		{},
		{Paths: []string{"not-a-path"}},
		{Paths: []string{fakeupstream.RandomHash(), "/nix/store/x"}},
	} {
		if _, err := e.Prefetch.Start(req); !errors.Is(err, prefetch.ErrBadPath) {
			t.Errorf("Start(%v): %v, want ErrBadPath", req, err)
		}
	}
	if got := e.Prefetch.List(); len(got) != 0 {
		t.Errorf("rejected requests left jobs: %v", got)
	}
	if _, err := e.Prefetch.Status("nope"); !errors.Is(err, prefetch.ErrNoJob) {
		t.Errorf("Status of an unknown job: %v, want ErrNoJob", err)
	}
}

func TestClosure(t *testing.T) {
	e := newEnv(t, prefetch.Options{Concurrency: 2})
	items := closure(e.Upstream, 10<<10)
	var total int64
	for _, it := range items {
		total += int64(len(it.File))
	}
	req := prefetch.Request{Paths: []string{items["a"].StorePath}, Closure: true}

	st := e.run(t, req)
	want := prefetch.Status{ID: st.ID, Request: req, State: prefetch.StateDone, Started: st.Started, Finished: st.Finished,
		Paths: 5, Cached: 5, BytesTotal: total, BytesDone: total}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("first run (-want +got):\n%s", diff)
	}
	if st.Finished.Before(st.Started) {
		t.Errorf("finished %v before it started %v", st.Finished, st.Started)
	}
	for _, it := range items {
		e.assertCached(t, it)
	}

	st = e.run(t, req)
	want = prefetch.Status{ID: st.ID, Request: req, State: prefetch.StateDone, Started: st.Started, Finished: st.Finished,
		Paths: 5, Cached: 5, Skipped: 5}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("second run (-want +got):\n%s", diff)
	}
	for name, it := range items {
		if n := e.Upstream.Count(it.NARPath); n != 1 {
			t.Errorf("NAR of %s downloaded %d times, want 1", name, n)
		}
		if n := e.Upstream.Count(it.NarInfoPath); n != 1 {
			t.Errorf("narinfo of %s fetched %d times, want 1", name, n)
		}
	}
	if got := e.Prefetch.List(); len(got) != 2 {
		t.Errorf("List has %d jobs, want 2", len(got))
	}
}

func TestWithoutClosure(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	items := closure(e.Upstream, 1000)
	st := e.run(t, prefetch.Request{Paths: []string{items["a"].Hash, baseName(items["e"])}})
	if st.State != prefetch.StateDone || st.Paths != 2 || st.Cached != 2 {
		t.Errorf("status %+v, want done with 2 paths cached", st)
	}
	e.assertCached(t, items["a"])
	e.assertCached(t, items["e"])
	if n := e.Upstream.Count(items["b"].NarInfoPath); n != 0 {
		t.Errorf("a reference was looked up without Closure (%d times)", n)
	}
}

func TestMissingReference(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	gone := fakeupstream.RandomHash()
	dep := e.Upstream.Add(fakeupstream.Path{Name: "dep", File: fakeupstream.RandomBytes(100), Compression: "xz"})
	top := e.Upstream.Add(fakeupstream.Path{Name: "top", File: fakeupstream.RandomBytes(100), Compression: "xz",
		References: []string{baseName(dep), gone + "-gone"}})

	st := e.run(t, prefetch.Request{Paths: []string{top.StorePath}, Closure: true})
	if st.State != prefetch.StateFailed {
		t.Errorf("state %q, want %q", st.State, prefetch.StateFailed)
	}
	if st.Paths != 3 || st.Cached != 2 {
		t.Errorf("paths %d, cached %d; want 3, 2", st.Paths, st.Cached)
	}
	if len(st.Failed) != 1 || !strings.Contains(st.Failed[0].Path, gone) || !strings.Contains(st.Failed[0].Error, "not found") {
		t.Errorf("Failed = %+v, want one entry naming %s as not found", st.Failed, gone)
	}
	e.assertCached(t, top)
	e.assertCached(t, dep)
}

func TestNARFailure(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	it := e.Upstream.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1000), Compression: "xz"})
	e.Upstream.SetFault(it.NARPath, fakeupstream.Fault{Corrupt: true})
	st := e.run(t, prefetch.Request{Paths: []string{it.Hash}})
	if st.State != prefetch.StateFailed || st.Cached != 0 || len(st.Failed) != 1 || st.Failed[0].Path != it.StorePath {
		t.Errorf("status %+v, want failed naming %s", st, it.StorePath)
	}
	if st.Fetching != 0 {
		t.Errorf("Fetching %d after the job ended", st.Fetching)
	}
}

// TestOverlappingJobs runs jobs whose closures share paths at the same time:
// each NAR must be downloaded once, every job must end with all its paths.
func TestOverlappingJobs(t *testing.T) {
	e := newEnv(t, prefetch.Options{Concurrency: 2})
	items := closure(e.Upstream, 64<<10)
	// Slow the NARs down so the jobs' downloads overlap.
	for _, it := range items {
		e.Upstream.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 8 << 10, Delay: 10 * time.Millisecond})
	}
	reqs := []prefetch.Request{
		{Paths: []string{items["a"].StorePath}, Closure: true},
		{Paths: []string{items["c"].StorePath}, Closure: true},
		{Paths: []string{items["b"].Hash, items["d"].Hash}, Closure: true},
		{Paths: []string{items["e"].Hash}},
	}
	wantPaths := []int{5, 3, 3, 1}
	var wg sync.WaitGroup
	results := make([]prefetch.Status, len(reqs))
	for i, req := range reqs {
		wg.Go(func() { results[i] = e.run(t, req) })
	}
	wg.Wait()
	for i, st := range results {
		if st.State != prefetch.StateDone || st.Paths != wantPaths[i] || st.Cached != wantPaths[i] || len(st.Failed) != 0 {
			t.Errorf("job %d: %+v, want done with %d paths cached", i, st, wantPaths[i])
		}
		if st.BytesDone != st.BytesTotal {
			t.Errorf("job %d: %d of %d bytes", i, st.BytesDone, st.BytesTotal)
		}
	}
	for name, it := range items {
		e.assertCached(t, it)
		if n := e.Upstream.Count(it.NARPath); n != 1 {
			t.Errorf("NAR of %s downloaded %d times, want 1", name, n)
		}
	}
}

func TestProgress(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	it := e.Upstream.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(64 << 10), Compression: "xz"})
	e.Upstream.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 4 << 10, Delay: 20 * time.Millisecond})
	var mu sync.Mutex
	var seen []prefetch.Status
	st, err := e.Prefetch.Run(t.Context(), prefetch.Request{Paths: []string{it.Hash}}, func(s prefetch.Status) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	})
	if err != nil || st.State != prefetch.StateDone {
		t.Fatalf("Run: %+v, %v", st, err)
	}
	mu.Lock()
	defer mu.Unlock()
	var last int64
	for _, s := range seen {
		if s.BytesDone < last || s.BytesDone > s.BytesTotal && s.BytesTotal > 0 {
			t.Errorf("progress went %d → %d (of %d)", last, s.BytesDone, s.BytesTotal)
		}
		last = s.BytesDone
	}
	if last != int64(len(it.File)) {
		t.Errorf("last progress %d bytes, want %d", last, len(it.File))
	}
}

func TestCloseCancelsJobs(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	it := e.Upstream.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1000), Compression: "xz"})
	e.Upstream.SetFault(it.NARPath, fakeupstream.Fault{StallAt: 10})
	st, err := e.Prefetch.Start(prefetch.Request{Paths: []string{it.Hash}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the download starts", func() bool { return e.Upstream.Count(it.NARPath) > 0 })
	done := make(chan struct{})
	go func() { e.Prefetch.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	got, err := e.Prefetch.Status(st.ID)
	if err != nil || got.State != prefetch.StateFailed {
		t.Errorf("after Close: %+v, %v; want failed", got, err)
	}
}

// TestSharedNAR prefetches two store paths whose NAR files are the same
// bytes (so the same local NAR name): one download, and the byte counters
// still agree.
func TestSharedNAR(t *testing.T) {
	e := newEnv(t, prefetch.Options{})
	file := fakeupstream.RandomBytes(20 << 10)
	one := e.Upstream.Add(fakeupstream.Path{Name: "one", File: file, Compression: "xz"})
	two := e.Upstream.Add(fakeupstream.Path{Name: "two", File: file, Compression: "xz"})
	if one.NARPath != two.NARPath {
		t.Fatalf("NAR paths differ: %s, %s", one.NARPath, two.NARPath)
	}
	st := e.run(t, prefetch.Request{Paths: []string{one.Hash, two.Hash}})
	if st.State != prefetch.StateDone || st.Cached != 2 {
		t.Errorf("status %+v, want done with 2 cached", st)
	}
	if st.BytesDone != st.BytesTotal {
		t.Errorf("%d of %d bytes done when the job is done", st.BytesDone, st.BytesTotal)
	}
	if n := e.Upstream.Count(one.NARPath); n != 1 {
		t.Errorf("NAR downloaded %d times, want 1", n)
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, prefetch.Options{})
	if _, err := e.Prefetch.Wait(ctx, "nope", time.Second); !errors.Is(err, prefetch.ErrNoJob) {
		t.Errorf("Wait for an unknown job: %v, want ErrNoJob", err)
	}
	it := e.Upstream.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(10 << 10), Compression: "xz"})
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // runs before the upstream closes, even on failure
	e.Upstream.SetFault(it.NARPath, fakeupstream.Fault{HoldAt: 1 << 10, Hold: func() { <-release }})
	st, err := e.Prefetch.Start(prefetch.Request{Paths: []string{it.Hash}})
	if err != nil {
		t.Fatal(err)
	}
	// While the download is held, a short wait ends with the job running.
	got, err := e.Prefetch.Wait(ctx, st.ID, 50*time.Millisecond)
	if err != nil || got.State != prefetch.StateRunning {
		t.Errorf("short Wait on a held job: %+v, %v; want running", got, err)
	}
	// A cancelled wait returns the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Prefetch.Wait(cctx, st.ID, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Wait: %v", err)
	}
	// A long wait returns as soon as the job ends, not after the minute.
	free()
	start := time.Now()
	got, err = e.Prefetch.Wait(ctx, st.ID, time.Minute)
	if err != nil || got.State != prefetch.StateDone {
		t.Errorf("Wait: %+v, %v; want done", got, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Wait took %v after the job could finish", d)
	}
	// Waiting on a finished job answers at once.
	if got, err := e.Prefetch.Wait(ctx, st.ID, time.Minute); err != nil || got.State != prefetch.StateDone {
		t.Errorf("Wait on a finished job: %+v, %v", got, err)
	}
}
