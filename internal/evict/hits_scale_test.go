//go:build scale

package evict

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// BenchmarkScaleHitsDuringEviction measures narinfo hits per second
// through the proxy's HTTP handler (routing, name check, lookup, headers,
// body: what BenchmarkNarInfoHit in internal/server serves), from as many
// goroutines as Ps, saturating every core, during one real eviction pass
// freeing 10 GiB as BenchmarkScalePass does (the window exactly the pass),
// against the same hits alone just before it (2 s) and just after it (as
// long as the pass). This is the question: what a pass running in
// the background costs hits.
//
// On a machine shared with other work one window of about a second says
// little (single ratios swing by ±0.2 from run to run), so it runs
// $SCALE_HIT_PAIRS (default 8) pairs of rounds, one with the pauses
// between batches and one without (a negative Config.Pause), in the order paused,
// unpaused, unpaused, paused, ... so that drift over the run weighs on
// both alike. Each round starts from a fresh copy of the upgraded index,
// written back to disk before anything is timed, so every pass frees the
// same 10 GiB from the same rows. It reports the median, min and max ratio
// of each mode (median-ratio-paused, median-ratio-no-pause, ...), the
// median hits each mode's pass cost (s-hits-lost-...: a paused pass is
// longer, so its ratio is over a longer window), and logs every round; then one pair more with one goroutine of hits (a core to
// spare), logged only.
func BenchmarkScaleHitsDuringEviction(b *testing.B) {
	src := upgradedIndex(b)
	pairs := 8
	if v := os.Getenv("SCALE_HIT_PAIRS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("SCALE_HIT_PAIRS=%q: a positive count", v)
		}
		pairs = n
	}
	var rounds []hitRound
	for b.Loop() {
		rounds = rounds[:0]
		for i := range 2 * pairs {
			paused := i%4 == 0 || i%4 == 3
			r := runHitRound(b, src, paused, runtime.GOMAXPROCS(0))
			b.Logf("round %2d %s", i+1, r)
			rounds = append(rounds, r)
		}
		for _, paused := range []bool{true, false} {
			b.Logf("one goroutine of hits: %s", runHitRound(b, src, paused, 1))
		}
	}
	var alone []float64
	for _, r := range rounds {
		alone = append(alone, r.alone())
	}
	med, lo, hi := spread(alone)
	b.Logf("hits/s alone (both windows' mean): median %.0f, %.0f to %.0f", med, lo, hi)
	b.ReportMetric(med, "hits/s-alone")
	for _, mode := range []struct {
		paused bool
		name   string
	}{{true, "paused"}, {false, "no-pause"}} {
		var ratios, took, slept, lost []float64
		for _, r := range rounds {
			if r.paused == mode.paused {
				ratios = append(ratios, r.ratio())
				took = append(took, r.took.Seconds())
				slept = append(slept, r.slept.Seconds())
				lost = append(lost, r.lost())
			}
		}
		med, lo, hi := spread(ratios)
		b.Logf("ratios %s: %.2f: median %.2f, %.2f to %.2f", mode.name, ratios, med, lo, hi)
		b.ReportMetric(med, "median-ratio-"+mode.name)
		b.ReportMetric(lo, "min-ratio-"+mode.name)
		b.ReportMetric(hi, "max-ratio-"+mode.name)
		med, _, _ = spread(lost)
		b.ReportMetric(med, "s-hits-lost-"+mode.name)
		med, _, _ = spread(took)
		if mode.paused {
			b.ReportMetric(med, "s/pass")
			med, _, _ = spread(slept)
			b.ReportMetric(med, "s-paused-per-pass")
		} else {
			b.ReportMetric(med, "s/pass-no-pause")
		}
	}
}

// hitRound is what one round of BenchmarkScaleHitsDuringEviction saw.
type hitRound struct {
	paused                bool
	procs                 int           // goroutines of hits
	copied                time.Duration // copying the index and syncing, untimed
	before, during, after float64       // hits per second
	cpu                   [3]cpuShare   // the machine's CPU in the three windows
	took                  time.Duration // the pass
	longest               time.Duration // its longest EvictNARs call
	looks, busy           int           // pauseAfter's looks at the CPU, and how many saw it busy
	slept                 time.Duration // the pass's pauses
}

// alone is the rate of hits alone, before and after the pass.
func (r hitRound) alone() float64 { return (r.before + r.after) / 2 }

// ratio is the rate of hits during the pass over the rate alone.
func (r hitRound) ratio() float64 { return r.during / r.alone() }

// lost is the hits the pass cost, in seconds of hits alone: a paused pass
// is longer, so its ratio is over a longer window, and this compares the
// two modes' whole cost.
func (r hitRound) lost() float64 { return (1 - r.ratio()) * r.took.Seconds() }

func (r hitRound) String() string {
	mode := "no-pause"
	if r.paused {
		mode = "paused  "
	}
	return fmt.Sprintf("%s ratio %.2f (%.2f s of hits lost): hits/s %.0f before, %.0f during, %.0f after; pass %.2f s, slept %.2f s (busy at %d of %d looks), longest batch %.3f s; cores this process/other/stolen/iowait %s, %s, %s; copy %.1f s",
		mode, r.ratio(), r.lost(), r.before, r.during, r.after, r.took.Seconds(), r.slept.Seconds(), r.busy, r.looks, r.longest.Seconds(), r.cpu[0], r.cpu[1], r.cpu[2], r.copied.Seconds())
}

// runHitRound runs one round on a fresh copy of the index in src: procs
// goroutines of hits for a second to warm the hot set, then alone for 2 s,
// during a pass freeing 10 GiB (with pauses or not), and alone again as
// long as the pass took.
func runHitRound(b *testing.B, src string, paused bool, procs int) hitRound {
	r := hitRound{paused: paused, procs: procs}
	start := time.Now()
	dir := copyIndex(b, src, false)
	defer os.RemoveAll(dir)
	// The copy is synced by copyIndex; this writes back the rest (the last
	// round's index, removed) so no writeback runs in the windows.
	syscall.Sync()
	r.copied = time.Since(start)
	time.Sleep(500 * time.Millisecond)
	st, err := store.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	h, closeH := hitServer(b, st)
	defer closeH()
	debug.FreeOSMemory() // each round starts from the same heap
	hits := newHitters(h, procs)
	hits.during(func() { time.Sleep(time.Second) }) // warm the hot set
	r.before, r.cpu[0] = hits.during(func() { time.Sleep(2 * time.Second) })
	ts := &timedStore{Store: st}
	cfg := scaleConfig(b, (st.NARBytes()+st.IndexSize()-10<<30)/9*10)
	if !paused {
		cfg.Pause = -1
	}
	e := New(ts, cfg)
	busy := e.busy
	e.busy = func() bool { // the pass's goroutine only: no lock
		r.looks++
		v := busy()
		if v {
			r.busy++
		}
		return v
	}
	e.sleep = func(ctx context.Context, d time.Duration) {
		t0 := time.Now()
		sleepCtx(ctx, d)
		r.slept += time.Since(t0)
	}
	r.during, r.cpu[1] = hits.during(func() {
		start := time.Now()
		rep, err := e.Pass(context.Background(), false)
		r.took = time.Since(start)
		if err != nil || rep.Reasons[0].Bytes < 10<<30 {
			b.Fatalf("pass freed %d bytes: %v", rep.Reasons[0].Bytes, err)
		}
	})
	r.after, r.cpu[2] = hits.during(func() { time.Sleep(r.took) })
	r.longest = ts.takeLongest()
	return r
}

// hitters serves narinfo hits through h from procs goroutines.
type hitters struct {
	h      http.Handler
	procs  int
	hashes []string
}

func newHitters(h http.Handler, procs int) *hitters {
	hashes := make([]string, 4096)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("%032d", i*241)
	}
	return &hitters{h: h, procs: procs, hashes: hashes}
}

// during serves hits while work runs and returns their rate over it,
// and how the machine's CPU was shared meanwhile.
func (hs *hitters) during(work func()) (float64, cpuShare) {
	var n atomic.Int64 // hits served, counted 256 at a time
	var done atomic.Bool
	var wg sync.WaitGroup
	for p := range hs.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := make([]*http.Request, len(hs.hashes))
			for i, hash := range hs.hashes {
				rs[i] = httptest.NewRequest(http.MethodGet, "http://cache.lan/"+hash+".narinfo", nil)
			}
			w := &hitWriter{h: make(http.Header)}
			i := p * 1000
			for !done.Load() {
				for range 256 {
					clear(w.h)
					w.code = 0
					hs.h.ServeHTTP(w, rs[i%len(rs)])
					if w.code != http.StatusOK {
						panic(fmt.Sprint("narinfo hit: status ", w.code))
					}
					i++
				}
				n.Add(256)
			}
		}()
	}
	defer func() { done.Store(true); wg.Wait() }()
	time.Sleep(100 * time.Millisecond) // all hitters running
	cpu0 := readCPU()
	n0, t0 := n.Load(), time.Now()
	work()
	rate := float64(n.Load()-n0) / time.Since(t0).Seconds()
	return rate, readCPU().since(cpu0)
}

// cpuTimes are the CPU times of this process and of the machine's cores
// (/proc/stat), at one instant.
type cpuTimes struct {
	at                         time.Time
	self                       time.Duration // user and system, getrusage
	busy, steal, iowait, total uint64        // all cores, in clock ticks
}

// readCPU reads cpuTimes; the machine's are zero if /proc/stat cannot be read.
func readCPU() cpuTimes {
	c := cpuTimes{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return c
	}
	line, _, _ := strings.Cut(string(data), "\n")
	// cpu user nice system idle iowait irq softirq steal guest...: not
	// guest, counted in user already.
	fields := strings.Fields(line)
	for i, f := range fields[1:min(len(fields), 9)] {
		v, _ := strconv.ParseUint(f, 10, 64)
		c.total += v
		switch i {
		case 3: // idle
		case 4:
			c.iowait = v
		case 7:
			c.steal = v
		default:
			c.busy += v
		}
	}
	return c
}

// cpuShare is how many cores, on average over a window, this process
// used, the rest of the machine used, the hypervisor took (steal), and
// sat waiting for I/O.
type cpuShare struct{ self, other, stolen, iowait float64 }

// since is the share of the cores between c0 and c.
func (c cpuTimes) since(c0 cpuTimes) cpuShare {
	wall := c.at.Sub(c0.at).Seconds()
	self := (c.self - c0.self).Seconds() / wall
	sh := cpuShare{self: self}
	if c.total > c0.total {
		// Clock ticks to cores: the ticks of all cores over the wall
		// time are the core count.
		cores := float64(runtime.NumCPU())
		tick := wall * cores / float64(c.total-c0.total)
		sh.other = max(0, float64(c.busy-c0.busy)*tick/wall-self)
		sh.stolen = float64(c.steal-c0.steal) * tick / wall
		sh.iowait = float64(c.iowait-c0.iowait) * tick / wall
	}
	return sh
}

func (s cpuShare) String() string {
	return fmt.Sprintf("%.2f/%.2f/%.2f/%.2f", s.self, s.other, s.stolen, s.iowait)
}

// spread is the median, min and max of xs (the mean of the middle two
// when there is an even number), NaN for none.
func spread(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + med) / 2
	}
	return med, s[0], s[len(s)-1]
}

// hitServer is the proxy's HTTP handler over st, built as
// BenchmarkNarInfoHit in internal/server builds it, and what closes it.
// Its upstream is never asked: every narinfo asked for is in the index.
func hitServer(b *testing.B, st *store.Store) (http.Handler, func()) {
	up, err := upstream.New("http://127.0.0.1:1", upstream.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.New(cache.Options{Store: st, Upstreams: upstream.NewGroup([]*upstream.Client{up}, 0), SkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Cache: c})
	if err != nil {
		c.Close()
		b.Fatal(err)
	}
	return srv, c.Close
}

// hitWriter is the least a ResponseWriter can be, reused across hits.
type hitWriter struct {
	h    http.Header
	code int
}

func (w *hitWriter) Header() http.Header         { return w.h }
func (w *hitWriter) WriteHeader(code int)        { w.code = code }
func (w *hitWriter) Write(p []byte) (int, error) { return len(p), nil }
