package upstream

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Stats is one upstream's traffic as a Tally counted it.
type Stats struct {
	Name string
	// OK, NotFound and Errors count requests by outcome.
	OK, NotFound, Errors int64
	// Latency is the time to the answers of all those requests, summed.
	Latency time.Duration
	// FetchedBytes are the NAR bytes received.
	FetchedBytes int64
	Breaker      BreakerState
}

// Tally is an Observer that keeps each upstream's counts for the status
// page: the figures the package makes, kept where they are made rather
// than read back from the metrics. The zero Tally is ready to use.
type Tally struct {
	mu sync.Mutex
	m  map[string]*Stats
}

var _ Observer = (*Tally)(nil)

// get returns upstream's counts; t.mu is held.
func (t *Tally) get(upstream string) *Stats {
	if t.m == nil {
		t.m = map[string]*Stats{}
	}
	s := t.m[upstream]
	if s == nil {
		s = &Stats{Name: upstream}
		t.m[upstream] = s
	}
	return s
}

// UpstreamRequest implements Observer.
func (t *Tally) UpstreamRequest(upstream, _, outcome string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(upstream)
	switch outcome {
	case "ok":
		s.OK++
	case "not_found":
		s.NotFound++
	default:
		s.Errors++
	}
	s.Latency += d
}

// UpstreamFetched implements Observer.
func (t *Tally) UpstreamFetched(upstream string, n int64) {
	t.mu.Lock()
	t.get(upstream).FetchedBytes += n
	t.mu.Unlock()
}

// UpstreamBreaker implements Observer.
func (t *Tally) UpstreamBreaker(upstream string, state int, _ bool) {
	t.mu.Lock()
	t.get(upstream).Breaker = BreakerState(state)
	t.mu.Unlock()
}

// Stats returns every upstream's counts so far, by name.
func (t *Tally) Stats() []Stats {
	t.mu.Lock()
	out := make([]Stats, 0, len(t.m))
	for _, s := range t.m {
		out = append(out, *s)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Stats) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Observers is one Observer telling each of obs, in order.
func Observers(obs ...Observer) Observer { return observers(obs) }

type observers []Observer

func (o observers) UpstreamRequest(upstream, kind, outcome string, d time.Duration) {
	for _, x := range o {
		x.UpstreamRequest(upstream, kind, outcome, d)
	}
}

func (o observers) UpstreamFetched(upstream string, n int64) {
	for _, x := range o {
		x.UpstreamFetched(upstream, n)
	}
}

func (o observers) UpstreamBreaker(upstream string, state int, tripped bool) {
	for _, x := range o {
		x.UpstreamBreaker(upstream, state, tripped)
	}
}
