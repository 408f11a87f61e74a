package upstream

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestTally: the counts the status page shows, told through Observers
// beside another observer (the metrics, in the proxy).
func TestTally(t *testing.T) {
	var tally, other Tally
	obs := Observers(&other, &tally)
	obs.UpstreamBreaker("http://b", int(BreakerClosed), false)
	obs.UpstreamRequest("http://a", "narinfo", "ok", 40*time.Millisecond)
	obs.UpstreamRequest("http://a", "nar", "not_found", 20*time.Millisecond)
	obs.UpstreamRequest("http://a", "narinfo", "error", time.Second)
	obs.UpstreamFetched("http://a", 1<<20)
	obs.UpstreamBreaker("http://a", int(BreakerOpen), true)
	want := []Stats{
		{Name: "http://a", OK: 1, NotFound: 1, Errors: 1, Latency: 1060 * time.Millisecond, FetchedBytes: 1 << 20, Breaker: BreakerOpen},
		{Name: "http://b"},
	}
	for name, got := range map[string][]Stats{"tally": tally.Stats(), "other": other.Stats()} {
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s's Stats (-want +got):\n%s", name, diff)
		}
	}
	if got := new(Tally).Stats(); len(got) != 0 {
		t.Errorf("zero Tally's Stats = %v, want none", got)
	}
}
