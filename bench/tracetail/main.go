// Command tracetail reads a Go execution trace of the proxy under narinfo
// load (GET /debug/pprof/trace on --pprof-listen while wrk runs) and says
// what the requests' tail is made of, in the scheduler's terms:
//
//   - waits: how long goroutines the network poller made runnable (a
//     request arrived on their connection) waited for a processor;
//   - frozen: for the longest 5 % of those waits, how much of the wait the
//     processor they were queued on showed no event for over 200 µs while
//     running — its thread was off the CPU, which only the kernel does —
//     rather than running other goroutines;
//   - streaks: how many responses (write system calls) a goroutine sent
//     without parking on the network in between: requests of one connection
//     served back to back (with the stock runtime, handed between the
//     connection's goroutine and net/http's per-request one through runnext,
//     never through the run queue) while the connections queued behind them
//     on that processor waited.
//
// Usage: go run . TRACE (from bench/tracetail; see BENCHMARKS.md).
package main

import (
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/exp/trace"
)

// frozenGap is how long a running processor may show no event before its
// thread counts as descheduled: a narinfo hit takes ~40 µs of CPU and
// emits several events.
const frozenGap = 200_000 // ns

type interval struct{ from, to trace.Time }

type wait struct {
	p        trace.ProcID
	from, to trace.Time
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tracetail TRACE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	if err := run(f, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	r, err := trace.NewReader(in)
	if err != nil {
		return err
	}
	var (
		lastEvent = map[trace.ProcID]trace.Time{} // running processors only
		frozen    = map[trace.ProcID][]interval{}
		woken     = map[trace.GoID]wait{}
		waits     []wait
		streak    = map[trace.GoID]int{}
		since     = map[trace.GoID]trace.Time{}
		streaks   []int
		spans     []int64
		first     trace.Time
		last      trace.Time
	)
	for {
		e, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		t := e.Time()
		if first == 0 {
			first = t
		}
		last = t
		if p := e.Proc(); p != trace.NoProc {
			if l, ok := lastEvent[p]; ok && t-l > frozenGap {
				frozen[p] = append(frozen[p], interval{l, t})
			}
			lastEvent[p] = t
		}
		if e.Kind() != trace.EventStateTransition {
			continue
		}
		st := e.StateTransition()
		switch st.Resource.Kind {
		case trace.ResourceProc:
			if _, to := st.Proc(); to != trace.ProcRunning {
				delete(lastEvent, st.Resource.Proc())
			}
		case trace.ResourceGoroutine:
			g := st.Resource.Goroutine()
			from, to := st.Goroutine()
			switch {
			case from == trace.GoWaiting && to == trace.GoRunnable &&
				e.Goroutine() == trace.NoGoroutine && e.Proc() != trace.NoProc:
				// Made runnable by the scheduler itself on a processor:
				// the network poller found its connection readable.
				woken[g] = wait{p: e.Proc(), from: t}
			case to == trace.GoRunning:
				if w, ok := woken[g]; ok {
					w.to = t
					waits = append(waits, w)
					delete(woken, g)
				}
			case to == trace.GoSyscall && topFunc(st.Stack) == "syscall.write":
				if streak[g] == 0 {
					since[g] = t
				}
				streak[g]++
			case from == trace.GoRunning && to == trace.GoWaiting && st.Reason == "network":
				if n := streak[g]; n > 0 {
					streaks = append(streaks, n)
					spans = append(spans, int64(t-since[g]))
				}
				streak[g] = 0
			}
		}
	}
	if len(waits) == 0 || len(streaks) == 0 {
		return fmt.Errorf("no network wake-ups or responses in the trace: was it taken under load?")
	}
	fmt.Fprintf(out, "trace: %.2f s\n", float64(last-first)/1e9)

	d := make([]int64, len(waits))
	for i, w := range waits {
		d[i] = int64(w.to - w.from)
	}
	slices.Sort(d)
	p95 := quantile(d, 0.95)
	fmt.Fprintf(out, "waits: %d goroutines woken by the network poller waited p50 %s p90 %s p99 %s max %s\n",
		len(d), ms(quantile(d, 0.5)), ms(quantile(d, 0.9)), ms(quantile(d, 0.99)), ms(d[len(d)-1]))
	var total, off int64
	for _, w := range waits {
		if int64(w.to-w.from) < p95 {
			continue
		}
		total += int64(w.to - w.from)
		for _, iv := range frozen[w.p] {
			if a, b := max(iv.from, w.from), min(iv.to, w.to); b > a {
				off += int64(b - a)
			}
		}
	}
	fmt.Fprintf(out, "frozen: waits >= p95 (%s) total %s; their processor's thread was off the CPU for %.0f%% of it, running other goroutines the rest\n",
		ms(p95), ms(total), 100*float64(off)/float64(total))

	requests, over1, over20 := 0, 0, 0
	for _, n := range streaks {
		requests += n
		if n > 1 {
			over1 += n
		}
		if n > 20 {
			over20 += n
		}
	}
	slices.Sort(streaks)
	slices.Sort(spans)
	fmt.Fprintf(out, "streaks: %d responses; %.0f%% sent in streaks of more than 1 request of one connection, %.0f%% in streaks of more than 20; longest %d; streak duration p99 %s max %s\n",
		requests, pct(over1, requests), pct(over20, requests), streaks[len(streaks)-1], ms(quantile(spans, 0.99)), ms(spans[len(spans)-1]))
	return nil
}

func topFunc(s trace.Stack) string {
	for f := range s.Frames() {
		return f.Func
	}
	return ""
}

func quantile(sorted []int64, q float64) int64 { return sorted[int(q*float64(len(sorted)-1))] }

func ms(ns int64) string { return fmt.Sprintf("%.2f ms", float64(ns)/1e6) }

func pct(a, b int) float64 { return 100 * float64(a) / float64(b) }
