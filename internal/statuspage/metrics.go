package statuspage

import (
	"slices"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// healthWindow is how far back an upstream's health looks.
const healthWindow = 5 * time.Minute

// sample is the upstreams' request and error counts at one moment.
type sample struct {
	at         time.Time
	reqs, errs map[string]int64
}

// readCounters fills s's counters from m. The
// metric vectors are read directly (not through a registry gather): the
// page costs a few hundred label lookups, not a /metrics scrape.
func readCounters(m *metrics.Metrics, s *Snapshot) {
	each(m.Lookups, func(l map[string]string, d *dto.Metric) {
		n := int64(d.GetCounter().GetValue())
		switch l["kind"] + "/" + l["result"] {
		case "narinfo/hit":
			s.Lookups.NarInfoHits += n
		case "narinfo/miss":
			s.Lookups.NarInfoMisses += n
		case "nar/hit":
			s.Lookups.NARHits += n
		case "nar/miss":
			s.Lookups.NARMisses += n
		}
	})
	each(m.ServedBytes, func(l map[string]string, d *dto.Metric) {
		n := int64(d.GetCounter().GetValue())
		switch l["source"] {
		case "cache":
			s.Served.CacheBytes += n
		case "upstream":
			s.Served.UpstreamBytes += n
		}
	})
	each(m.SavedBytes, func(_ map[string]string, d *dto.Metric) {
		s.Served.SavedBytes += int64(d.GetCounter().GetValue())
	})
	each(m.VerifyFailures, func(l map[string]string, d *dto.Metric) {
		s.VerifyFailures[l["check"]] += int64(d.GetCounter().GetValue())
	})
	each(m.Recompressed, func(l map[string]string, d *dto.Metric) {
		n := int64(d.GetCounter().GetValue())
		switch l["result"] {
		case "done":
			s.Recompressed.NARs += n
		case "mismatch":
			s.Recompressed.Mismatches += n
		case "incompressible", "no-room":
			// Left as they are on purpose (no room: the disk bound's
			// call, shown on the disk card): no failure.
		default:
			s.Recompressed.Errors += n
		}
	})
	each(m.RecompressBytes, func(l map[string]string, d *dto.Metric) {
		n := int64(d.GetCounter().GetValue())
		if l["direction"] == "in" {
			s.Recompressed.InBytes += n
		} else {
			s.Recompressed.OutBytes += n
		}
	})
	each(m.RecompressCPU, func(_ map[string]string, d *dto.Metric) {
		s.Recompressed.CPUSeconds += d.GetCounter().GetValue()
	})
}

// each calls fn with the labels and value of every series c collects.
func each(c prometheus.Collector, fn func(labels map[string]string, d *dto.Metric)) {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		labels := make(map[string]string, len(d.GetLabel()))
		for _, lp := range d.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		fn(labels, &d)
	}
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
