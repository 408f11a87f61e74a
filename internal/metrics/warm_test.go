package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWarmMetrics(t *testing.T) {
	b := warm.NewBoard()
	at := time.Unix(1796610000, 0)
	r := warm.Report{Target: warm.Target{Flake: "github:me/macs", Attr: "img"}, Lock: warm.Lock{Rev: "5d2f0c4a9e1b"},
		Coverage: warm.Coverage{Paths: 10, Cached: 6, Upstream: 3, Missing: 1, Build: []warm.Build{{Name: "img"}}}}
	b.Warmed(r, at)
	b.Failed("github:me/macs#other", errors.New("exit status 1"), at, at.Add(time.Minute))
	reg := prometheus.NewPedanticRegistry()
	RegisterWarms(reg, b.List)
	want := `
# HELP nix_cache_proxy_warm_builds Derivations a client would have to build for a warmed flake attribute, at its last warm.
# TYPE nix_cache_proxy_warm_builds gauge
nix_cache_proxy_warm_builds{attr="github:me/macs#img"} 1
# HELP nix_cache_proxy_warm_complete 1 when the last warm of a flake attribute found everything substitutes from the cache or an upstream, else 0 (also before its first warm).
# TYPE nix_cache_proxy_warm_complete gauge
nix_cache_proxy_warm_complete{attr="github:me/macs#img"} 0
nix_cache_proxy_warm_complete{attr="github:me/macs#other"} 0
# HELP nix_cache_proxy_warm_errors_total Tries to evaluate or warm a flake attribute that failed.
# TYPE nix_cache_proxy_warm_errors_total counter
nix_cache_proxy_warm_errors_total{attr="github:me/macs#img"} 0
nix_cache_proxy_warm_errors_total{attr="github:me/macs#other"} 1
# HELP nix_cache_proxy_warm_last_success_timestamp_seconds When a flake attribute was last warmed (Unix time).
# TYPE nix_cache_proxy_warm_last_success_timestamp_seconds gauge
nix_cache_proxy_warm_last_success_timestamp_seconds{attr="github:me/macs#img"} 1.79661e+09
# HELP nix_cache_proxy_warm_paths Paths substituting a warmed flake attribute needs, by where they come from (cached, upstream, missing, unknown), at its last warm.
# TYPE nix_cache_proxy_warm_paths gauge
nix_cache_proxy_warm_paths{attr="github:me/macs#img",where="cached"} 6
nix_cache_proxy_warm_paths{attr="github:me/macs#img",where="missing"} 1
nix_cache_proxy_warm_paths{attr="github:me/macs#img",where="unknown"} 0
nix_cache_proxy_warm_paths{attr="github:me/macs#img",where="upstream"} 3
# HELP nix_cache_proxy_warm_revision_info The flake revision a flake attribute was last warmed at (git rev, or NAR hash), as a label; always 1.
# TYPE nix_cache_proxy_warm_revision_info gauge
nix_cache_proxy_warm_revision_info{attr="github:me/macs#img",rev="5d2f0c4a9e1b"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
