package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// How a request was answered: the answer label's values.
const (
	answerForwarded = "forwarded" // a LAN cache's answer, streamed
	answerSelf      = "self"      // the relay's own: no cache reachable
	answerBroken    = "broken"    // the cache broke off mid-answer; the client got an error
)

// relayMetrics are the relay's metrics, registered on Options.Metrics.
type relayMetrics struct {
	requests *prometheus.CounterVec // kind, answer
	bytes    prometheus.Counter
	up       *prometheus.GaugeVec   // cache
	probes   *prometheus.CounterVec // cache, result
	changes  prometheus.Counter
}

func newRelayMetrics(reg prometheus.Registerer, caches []*lanCache) relayMetrics {
	f := promauto.With(reg) // a nil Registerer registers nothing
	m := relayMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "nix_cache_proxy_relay_requests_total",
			Help: "Requests the relay answered, by kind (nix-cache-info, narinfo, nar, ls, log) and answer (forwarded, self, broken).",
		}, []string{"kind", "answer"}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "nix_cache_proxy_relay_forwarded_bytes_total",
			Help: "Response body bytes forwarded from LAN caches.",
		}),
		up: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nix_cache_proxy_relay_cache_up",
			Help: "1 while the relay takes the LAN cache as reachable.",
		}, []string{"cache"}),
		probes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "nix_cache_proxy_relay_probes_total",
			Help: "Probes of LAN caches (GET nix-cache-info), by result (ok, error).",
		}, []string{"cache", "result"}),
		changes: f.NewCounter(prometheus.CounterOpts{
			Name: "nix_cache_proxy_relay_network_changes_total",
			Help: "Network changes the operating system told of; each probes every cache at once.",
		}),
	}
	for _, c := range caches {
		m.up.WithLabelValues(c.name).Set(0)
	}
	for _, k := range []string{kindCacheInfo, kindNarInfo, kindNAR, kindListing, kindLog} {
		for _, a := range []string{answerForwarded, answerSelf} {
			m.requests.WithLabelValues(k, a)
		}
	}
	return m
}
