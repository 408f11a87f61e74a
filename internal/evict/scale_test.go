//go:build scale

// The scale benchmark: a synthetic index of 1,000,000 narinfos and 200,000
// NAR files, as a LAN cache has after years. It is behind the "scale" build
// tag (building the index takes a minute): see BENCHMARKS.md.
//
//	go test -tags scale -run '^$' -bench Scale -benchtime 1x -timeout 30m ./internal/evict
package evict

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	bolt "go.etcd.io/bbolt"
)

const (
	scaleNarInfos = 1_000_000
	scaleNARs     = 200_000
	// 200,000 x 400 KiB = 76 GiB of NARs: a bound 10 GiB under that is
	// still above the 90 % low watermark, so one pass frees 10 GiB.
	scaleNARSize = 400 << 10
)

var (
	scaleOnce    sync.Once
	scaleDir     string
	upgradedOnce sync.Once
	upgradedDir  string
)

// TestMain removes the indexes built for the whole process (2.4 GiB
// each): a benchmark's temp dir goes with the benchmark, these outlive it.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{scaleDir, upgradedDir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// putScaleNAR writes synthetic path i's NAR source (from cache.nixos.org)
// and, for the first scaleNARs paths, its NAR row in the layout from
// before rows kept their refillability; a zero access leaves it out.
func putScaleNAR(srcs, nars *bolt.Bucket, i int, hash, nar string, stored, access time.Time) error {
	src, err := json.Marshal(store.NARSource{Hash: hash, StorePath: "/nix/store/" + hash + "-pkg-" + strconv.Itoa(i),
		Upstream: "https://cache.nixos.org", URL: "https://cache.nixos.org/nar/" + nar, Size: scaleNARSize,
		SHA256: make([]byte, 32), Seen: stored})
	if err != nil {
		return err
	}
	if err := srcs.Put([]byte(nar), src); err != nil {
		return err
	}
	if i >= scaleNARs {
		return nil
	}
	row := `{"size":` + strconv.Itoa(scaleNARSize) + `,"stored":"` + stored.Format(time.RFC3339Nano) + `"`
	if !access.IsZero() {
		row += `,"access":"` + access.Format(time.RFC3339Nano) + `"`
	}
	return nars.Put([]byte(nar), []byte(row+"}"))
}

// scaleIndex writes the synthetic index straight with bbolt, in large
// transactions (PutNarInfo's one transaction per narinfo would take an
// hour), in the rows' own formats, the NAR rows as they were before they
// kept whether their NAR is refillable (as every index written until then
// has them: Open upgrades them). No NAR file exists on disk: eviction
// reads the index, and removing a file that is not there is the same
// unlink(2) call. It is built once per process, in a temp dir.
func scaleIndex(b *testing.B) string {
	scaleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "evict-scale-")
		if err != nil {
			b.Fatal(err)
		}
		scaleDir = dir
		db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		db.NoSync = true
		start := time.Now()
		stored := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		text := []byte(strings.Repeat("x", 500)) // a narinfo's typical size
		const batch = 20000
		for lo := 0; lo < scaleNarInfos; lo += batch {
			err := db.Update(func(tx *bolt.Tx) error {
				ni, _ := tx.CreateBucketIfNotExists([]byte("narinfo"))
				srcs, _ := tx.CreateBucketIfNotExists([]byte("narsrc"))
				nars, _ := tx.CreateBucketIfNotExists([]byte("nar"))
				for i := lo; i < lo+batch; i++ {
					hash, nar := fmt.Sprintf("%032d", i), fmt.Sprintf("%052d.nar.xz", i)
					if err := ni.Put([]byte(hash), text); err != nil {
						return err
					}
					at := stored.Add(time.Duration(i*7919%scaleNARs) * time.Second) // shuffled ages
					if err := putScaleNAR(srcs, nars, i, hash, nar, stored, at); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := db.Sync(); err != nil {
			b.Fatal(err)
		}
		st, _ := os.Stat(filepath.Join(dir, "index.db"))
		b.Logf("built index: %d narinfos, %d NAR rows, %d MiB, in %s", scaleNarInfos, scaleNARs, st.Size()>>20, time.Since(start).Round(time.Second))
	})
	return scaleDir
}

// upgradedIndex is scaleIndex once opened: its NAR rows keep whether
// their NAR is refillable, as they do after the first Open of this
// version. The benchmarks of a pass start from it (one Open of the
// original index upgrades it, and the process that did so has the source
// rows it read mapped: a pass in a process started later has not).
func upgradedIndex(b *testing.B) string {
	upgradedOnce.Do(func() {
		upgradedDir = copyIndex(b, scaleIndex(b), false)
		start := time.Now()
		st, err := store.Open(upgradedDir)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		b.Logf("upgraded the index's NAR rows (first Open of this version) in %s", time.Since(start).Round(time.Millisecond))
		if os.Getenv("SCALE_STATS") != "" {
			db, err := bolt.Open(filepath.Join(upgradedDir, "index.db"), 0o644, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			db.View(func(tx *bolt.Tx) error {
				for _, name := range []string{"nar", "narage"} {
					st := tx.Bucket([]byte(name)).Stats()
					b.Logf("%s: %d keys, %d leaf pages (%d MiB, %.0f%% in use), %d branch pages", name, st.KeyN, st.LeafPageN, st.LeafPageN*4096>>20, 100*float64(st.LeafInuse)/float64(st.LeafPageN*4096), st.BranchPageN)
				}
				return nil
			})
			db.Close()
		}
	})
	return upgradedDir
}

// copyIndex gives a benchmark its own copy of the index in src, so
// eviction in one does not change what the next one sees. temp: in the
// benchmark's temp dir, removed when it ends.
func copyIndex(b *testing.B, src string, temp bool) string {
	var dst string
	if temp {
		dst = b.TempDir()
	} else {
		d, err := os.MkdirTemp("", "evict-scale-")
		if err != nil {
			b.Fatal(err)
		}
		dst = d
	}
	in, err := os.Open(filepath.Join(src, "index.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dst, "index.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	// On disk before anything is timed: the first fsync of the index must
	// not be the one that writes the whole copy out.
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	return dst
}

// procStatus reads fields (in kB) of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// rssSampler samples the process's anonymous RSS (the heap, what the pass
// itself holds) and its total RSS (plus the index's mmapped pages, which
// the kernel can drop at will) every 5 ms until stopped, and returns the
// peaks above what they were at the start.
func rssSampler() (stop func() (anon, total int64)) {
	baseAnon, baseTotal := procStatus("RssAnon"), procStatus("VmRSS")
	var peakAnon, peakTotal atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if a := procStatus("RssAnon"); a > peakAnon.Load() {
				peakAnon.Store(a)
			}
			if v := procStatus("VmRSS"); v > peakTotal.Load() {
				peakTotal.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		<-finished
		return peakAnon.Load() - baseAnon, peakTotal.Load() - baseTotal
	}
}

// passProfile writes a CPU profile of the pass alone to the file
// $SCALE_PASS_CPUPROFILE names, if set (go test's -cpuprofile would
// profile the index's building too).
func passProfile(b *testing.B) (stop func()) {
	if path := os.Getenv("SCALE_PASS_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 512
		return func() {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	path := os.Getenv("SCALE_PASS_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// BenchmarkScaleOpen is Open of the index, and (reported apart) the first
// Open of this version, which upgrades every NAR row.
func BenchmarkScaleOpen(b *testing.B) {
	dir := copyIndex(b, scaleIndex(b), true)
	start := time.Now()
	st, err := store.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	st.Close()
	for b.Loop() {
		st, err := store.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
	b.ReportMetric(first.Seconds(), "s/first-open-upgrading")
}

// BenchmarkScalePass is one eviction pass choosing 10 GiB of 195 GiB to
// free, over the whole index.
func BenchmarkScalePass(b *testing.B) {
	var took time.Duration
	var freed, anon, total, alloc int64
	var longest, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		dir := copyIndex(b, upgradedIndex(b), true)
		st, err := store.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		narBytes := st.NARBytes() // not Stats: it walks the narinfo bucket
		// The bound whose low watermark is 10 GiB under today's size.
		max := (narBytes + st.IndexSize() - 10<<30) / 9 * 10
		ts := &timedStore{Store: st}
		e := New(ts, scaleConfig(b, max))
		debug.FreeOSMemory()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := rssSampler()
		stopProfile := passProfile(b)
		b.StartTimer()
		cpu0 := processCPU(b)
		start := time.Now()
		rep, err := e.Pass(context.Background(), false)
		took = time.Since(start)
		cpu = processCPU(b) - cpu0
		b.StopTimer()
		stopProfile()
		longest = ts.takeLongest()
		if err != nil {
			b.Fatal(err)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		anon, total = stop()
		alloc = int64(after.TotalAlloc - before.TotalAlloc)
		freed = rep.Reasons[0].Bytes
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(took.Seconds(), "s/pass")
	b.ReportMetric(float64(freed)/(1<<30), "GiB-freed")
	b.ReportMetric(float64(anon)/(1<<20), "MiB-peak-anon-RSS")
	b.ReportMetric(float64(total)/(1<<20), "MiB-peak-RSS")
	b.ReportMetric(float64(alloc)/(1<<20), "MiB-allocated")
	b.ReportMetric(longest.Seconds(), "s-longest-evict-batch")
	b.ReportMetric(cpu.Seconds(), "s-process-CPU")
	// The same pass in a process of its own, as the proxy runs it: this
	// one built the index and holds what that left.
	open, peak := passInChild(b)
	b.ReportMetric(float64(open)/(1<<20), "MiB-child-RSS-after-open")
	b.ReportMetric(float64(peak)/(1<<20), "MiB-child-peak-RSS")
}

// passInChild runs one pass freeing 10 GiB on a fresh copy of the
// upgraded index in a new process (this test binary, running
// TestScalePassChild) and returns that process's RSS once the store is
// open and its peak RSS (VmHWM: the kernel's own high-water mark, the Go
// runtime, the binary, the index pages mapped and the pass together).
func passInChild(b *testing.B) (open, peak int64) {
	dir := copyIndex(b, upgradedIndex(b), true)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestScalePassChild$", "-test.v")
	cmd.Env = append(os.Environ(), "SCALE_PASS_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pass in a child process: %v\n%s", err, out)
	}
	if os.Getenv("SCALE_PASS_TRACE") != "" {
		b.Logf("child:\n%s", out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "child-rss:"); ok {
			fmt.Sscan(v, &open, &peak)
		}
	}
	if peak == 0 {
		b.Fatalf("no figures from the child:\n%s", out)
	}
	return open, peak
}

// TestScalePassChild is passInChild's process: it does nothing unless
// SCALE_PASS_CHILD names an index.
func TestScalePassChild(t *testing.T) {
	dir := os.Getenv("SCALE_PASS_CHILD")
	if dir == "" {
		t.Skip("run by BenchmarkScalePass")
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	open := procStatus("VmRSS")
	if os.Getenv("SCALE_PASS_TRACE") != "" {
		t0 := time.Now()
		go func() {
			for {
				fmt.Printf("trace %5dms anon %4d MiB file %5d MiB\n", time.Since(t0).Milliseconds(), procStatus("RssAnon")>>20, procStatus("RssFile")>>20)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	narBytes := st.NARBytes() // not Stats: it walks the narinfo bucket
	e := New(st, Config{MaxSize: (narBytes + st.IndexSize() - 10<<30) / 9 * 10})
	rep, err := e.Pass(context.Background(), false)
	if err != nil || rep.Reasons[0].Bytes < 10<<30 {
		t.Fatalf("pass freed %d bytes: %v", rep.Reasons[0].Bytes, err)
	}
	fmt.Printf("child-rss: %d %d\n", open, procStatus("VmHWM"))
}

// scaleConfig is the Config of the scale benchmarks' passes: bound max,
// the batch size scaleBatch and the pause $SCALE_PAUSE (a multiple of
// each batch's time, Config.Pause; unset, the default).
func scaleConfig(b testing.TB, max int64) Config {
	cfg := Config{MaxSize: max, Batch: scaleBatch(b)}
	if v := os.Getenv("SCALE_PAUSE"); v != "" {
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p <= 0 {
			b.Fatalf("SCALE_PAUSE=%q: a positive multiple", v)
		}
		cfg.Pause = p
	}
	return cfg
}

// scaleBatch is Config.Batch for the scale benchmarks: SCALE_BATCH=N, or
// "pass" for the whole pass in one transaction; unset, the default.
func scaleBatch(b testing.TB) int {
	switch v := os.Getenv("SCALE_BATCH"); v {
	case "":
		return 0
	case "pass":
		return 1 << 30
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("SCALE_BATCH=%q: a positive count or \"pass\"", v)
		}
		return n
	}
}

// timedStore times each EvictNARs call: its write transaction (which
// holds bbolt's write lock: every other writer waits for it) and the
// batch's removals after it, so the longest call bounds from above how
// long a NAR commit or a narinfo store could wait on a pass.
type timedStore struct {
	*store.Store
	mu      sync.Mutex
	longest time.Duration
}

func (t *timedStore) EvictNARs(ctx context.Context, names []string) (int64, error) {
	start := time.Now()
	n, err := t.Store.EvictNARs(ctx, names)
	d := time.Since(start)
	t.mu.Lock()
	t.longest = max(t.longest, d)
	t.mu.Unlock()
	return n, err
}

// takeLongest returns the longest call since the last and forgets it.
func (t *timedStore) takeLongest() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.longest
	t.longest = 0
	return d
}

// processCPU is the CPU time (user and system) this process has used: over
// a pass, the pass's own and the runtime's (its garbage collection) and
// the RSS sampler's, nothing else running.
func processCPU(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
