package metrics

import (
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
	"github.com/prometheus/client_golang/prometheus"
)

// warmCollector reads the warmed flake attributes' state when scraped.
// The attr label is FLAKEREF#ATTR: a set the admin configures ([[warm]]
// tables, `warm` runs), not one clients grow.
type warmCollector struct {
	list     func() []warm.Status
	paths    *prometheus.Desc
	builds   *prometheus.Desc
	complete *prometheus.Desc
	success  *prometheus.Desc
	errors   *prometheus.Desc
	revision *prometheus.Desc
}

// RegisterWarms adds the gauges and counters of warmed flake attributes,
// read from list (warm.Board's List) at scrape time.
func RegisterWarms(reg prometheus.Registerer, list func() []warm.Status) {
	attr := []string{"attr"}
	reg.MustRegister(&warmCollector{
		list: list,
		paths: prometheus.NewDesc(namespace+"_warm_paths",
			"Paths substituting a warmed flake attribute needs, by where they come from (cached, upstream, missing, unknown), at its last warm.", []string{"attr", "where"}, nil),
		builds: prometheus.NewDesc(namespace+"_warm_builds",
			"Derivations a client would have to build for a warmed flake attribute, at its last warm.", attr, nil),
		complete: prometheus.NewDesc(namespace+"_warm_complete",
			"1 when the last warm of a flake attribute found everything substitutes from the cache or an upstream, else 0 (also before its first warm).", attr, nil),
		success: prometheus.NewDesc(namespace+"_warm_last_success_timestamp_seconds",
			"When a flake attribute was last warmed (Unix time).", attr, nil),
		errors: prometheus.NewDesc(namespace+"_warm_errors_total",
			"Tries to evaluate or warm a flake attribute that failed.", attr, nil),
		revision: prometheus.NewDesc(namespace+"_warm_revision_info",
			"The flake revision a flake attribute was last warmed at (git rev, or NAR hash), as a label; always 1.", []string{"attr", "rev"}, nil),
	})
}

func (c *warmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.paths, c.builds, c.complete, c.success, c.errors, c.revision} {
		ch <- d
	}
}

func (c *warmCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, s := range c.list() {
		complete := 0
		if s.Complete() {
			complete = 1
		}
		gauge(c.complete, complete, s.Target)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(s.Errors), s.Target)
		if s.Warmed.IsZero() {
			continue
		}
		gauge(c.paths, s.Cached, s.Target, warm.Cached)
		gauge(c.paths, s.Upstream, s.Target, warm.Upstream)
		gauge(c.paths, s.Missing, s.Target, warm.Missing)
		gauge(c.paths, s.Unknown, s.Target, warm.Unknown)
		gauge(c.builds, s.Builds, s.Target)
		ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, float64(s.Warmed.UnixNano())/1e9, s.Target)
		gauge(c.revision, 1, s.Target, s.Rev)
	}
}
