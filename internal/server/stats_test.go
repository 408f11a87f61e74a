package server_test

import (
	"net/http"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCacheStatsMatchMetrics: cache.Stats, which the status page reads,
// counts what the metrics count: narinfo and NAR misses and hits, the
// bytes served from upstream and from disk, and a refused narinfo.
func TestCacheStatsMatchMetrics(t *testing.T) {
	p, fu, _ := metricsProxy(t, config{})
	m := p.metrics
	it := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(4096), Compression: "none"})
	other, _ := fakeupstream.NewKey(t, "other-1")
	untrusted := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), Compression: "none", SignWith: &other})
	for range 2 {
		if r := p.get("/" + it.Hash + ".narinfo"); r.status != http.StatusOK {
			t.Fatalf("narinfo: %d", r.status)
		}
		if r := p.get("/nar/" + it.FileHash + ".nar"); r.status != http.StatusOK {
			t.Fatalf("NAR: %d", r.status)
		}
		p.settle()
	}
	if r := p.get("/" + untrusted.Hash + ".narinfo"); r.status != http.StatusNotFound {
		t.Fatalf("untrusted narinfo: %d", r.status)
	}
	st := p.cache.Stats()
	check(t,
		want{"NarInfoHits", float64(st.NarInfoHits), testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "hit"))},
		want{"NarInfoMisses", float64(st.NarInfoMisses), testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "miss"))},
		want{"NARHits", float64(st.NARHits), testutil.ToFloat64(m.Lookups.WithLabelValues("nar", "hit"))},
		want{"NARMisses", float64(st.NARMisses), testutil.ToFloat64(m.Lookups.WithLabelValues("nar", "miss"))},
		want{"ServedCacheBytes", float64(st.ServedCacheBytes), testutil.ToFloat64(m.ServedBytes.WithLabelValues("cache"))},
		want{"ServedUpstreamBytes", float64(st.ServedUpstreamBytes), testutil.ToFloat64(m.ServedBytes.WithLabelValues("upstream"))},
		want{"SavedBytes", float64(st.SavedBytes), testutil.ToFloat64(m.SavedBytes)},
		want{"VerifyFailures{signature}", float64(st.VerifyFailures["signature"]), testutil.ToFloat64(m.VerifyFailures.WithLabelValues("signature"))},
		// And they are not all zero: the requests above counted.
		want{"NarInfoHits", float64(st.NarInfoHits), 1},
		want{"NARHits", float64(st.NARHits), 1},
		want{"ServedCacheBytes", float64(st.ServedCacheBytes), 4096},
		want{"ServedUpstreamBytes", float64(st.ServedUpstreamBytes), 4096},
		want{"VerifyFailures{signature}", float64(st.VerifyFailures["signature"]), 1},
	)
}
