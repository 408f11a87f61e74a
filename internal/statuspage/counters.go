package statuspage

import (
	"maps"
	"slices"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// healthWindow is how far back an upstream's health looks.
const healthWindow = 5 * time.Minute

// sample is the upstreams' request and error counts at one moment.
type sample struct {
	at         time.Time
	reqs, errs map[string]int64
}

// readCounters fills s's counters of the cache since its start.
func readCounters(st cache.Stats, s *Snapshot) {
	s.Lookups.NarInfoHits, s.Lookups.NarInfoMisses = st.NarInfoHits, st.NarInfoMisses
	s.Lookups.NARHits, s.Lookups.NARMisses = st.NARHits, st.NARMisses
	s.Served.CacheBytes, s.Served.UpstreamBytes, s.Served.SavedBytes = st.ServedCacheBytes, st.ServedUpstreamBytes, st.SavedBytes
	maps.Copy(s.VerifyFailures, st.VerifyFailures)
	// NARs left as they are on purpose (incompressible; no room, the disk
	// bound's call shown on the disk card) are no failure.
	s.Recompressed.NARs, s.Recompressed.Mismatches, s.Recompressed.Errors = st.Recompressed, st.RecompressMismatches, st.RecompressErrors
	s.Recompressed.InBytes, s.Recompressed.OutBytes = st.RecompressInBytes, st.RecompressOutBytes
	s.Recompressed.CPUSeconds = st.RecompressCPU.Seconds()
}

// upstreams lists the configured upstreams in priority order, then any
// other the traffic names, with their counters and health.
func (c *Collector) upstreams(now time.Time, traffic []upstream.Stats) []Upstream {
	counts := make(map[string]upstream.Stats, len(traffic))
	names := slices.Clone(c.cfg.Upstreams)
	for _, t := range traffic { // sorted by name
		counts[t.Name] = t
		if !slices.Contains(c.cfg.Upstreams, t.Name) {
			names = append(names, t.Name)
		}
	}

	cur := sample{at: now, reqs: map[string]int64{}, errs: map[string]int64{}}
	for name, t := range counts {
		cur.reqs[name], cur.errs[name] = t.OK+t.NotFound+t.Errors, t.Errors
	}
	base := c.baseline(cur)

	out := make([]Upstream, 0, len(names))
	for _, name := range names {
		u := Upstream{Name: name, Breaker: BreakerClosed}
		if t, ok := counts[name]; ok {
			switch t.Breaker {
			case upstream.BreakerOpen:
				u.Breaker = BreakerOpen
			case upstream.BreakerHalfOpen:
				u.Breaker = BreakerHalfOpen
			}
			u.OK, u.NotFound, u.Errors, u.FetchedBytes = t.OK, t.NotFound, t.Errors, t.FetchedBytes
			if n := t.OK + t.NotFound + t.Errors; n > 0 {
				u.MeanLatencySeconds = t.Latency.Seconds() / float64(n)
			}
		}
		u.RecentRequests = max(0, cur.reqs[name]-base.reqs[name])
		u.RecentErrors = max(0, cur.errs[name]-base.errs[name])
		u.Health = health(u.RecentRequests, u.RecentErrors)
		out = append(out, u)
	}
	return out
}

// baseline records cur and returns the counts to subtract from it for the
// recent window: those of the oldest sample within healthWindow, or zero
// (since start) when the process is younger than the window or the page
// has not been looked at within it.
func (c *Collector) baseline(cur sample) sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	cutoff := cur.at.Add(-healthWindow)
	i := 0
	for i < len(c.samples) && c.samples[i].at.Before(cutoff) {
		i++
	}
	c.samples = c.samples[i:]
	var base sample
	if !c.cfg.Started.After(cutoff) && len(c.samples) > 0 && cur.at.Sub(c.samples[0].at) >= 30*time.Second {
		base = c.samples[0]
	}
	if n := len(c.samples); n == 0 || cur.at.Sub(c.samples[n-1].at) >= 10*time.Second {
		c.samples = append(c.samples, cur)
	}
	return base
}

func health(reqs, errs int64) string {
	switch {
	case reqs == 0:
		return HealthIdle
	case errs == 0:
		return HealthOK
	case errs*2 >= reqs:
		return HealthDown
	default:
		return HealthDegraded
	}
}
