package server_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// TestOutage: with its only upstream refusing connections the proxy still
// serves hits, /readyz answers 200 "degraded" with the reason (a load
// balancer must not pull a cache that serves hits), and the outage is
// logged once as it begins and once as it ends, not once or twice per miss.
func TestOutage(t *testing.T) {
	var logs logLines
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	up := fakeupstream.New(t)
	cached := up.Add(fakeupstream.Path{File: []byte("cached before the outage"), Compression: "none"})
	p := newProxy(t, config{ups: []*fakeupstream.Upstream{up}, log: log, backoff: 50 * time.Millisecond})
	wantStatus(t, "GET narinfo before the outage", p.get(cached.NarInfoPath), http.StatusOK)
	if r := p.get("/readyz"); r.status != http.StatusOK || string(r.body) != "ready\n" {
		t.Fatalf("/readyz before the outage: %d %q", r.status, r.body)
	}

	up.Close()
	const misses = 20
	for range misses {
		wantStatus(t, "GET a miss during the outage", p.get("/"+fakeupstream.RandomHash()+".narinfo"), http.StatusNotFound)
	}
	r := p.get("/readyz")
	if want := "degraded: no upstream answers: " + up.URL(); r.status != http.StatusOK || !strings.HasPrefix(string(r.body), want) {
		t.Errorf("/readyz during the outage: %d %q, want 200 %q…", r.status, r.body, want)
	}
	wantStatus(t, "GET a hit during the outage", p.get(cached.NarInfoPath), http.StatusOK)
	if n := len(logs.find(t, "upstream unreachable: skipped until it answers again", map[string]any{"level": "WARN", "upstream": up.URL()})); n != 1 {
		t.Errorf("%d warnings that the upstream is unreachable, want 1", n)
	}
	// Before the breaker opens (3 failures in a row) each miss is a
	// warning from the cache and one from the server; after, none.
	warns := 0
	for _, line := range strings.Split(logs.buf.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) {
			warns++
		}
	}
	if warns > 2*3+1 {
		t.Errorf("%d warnings for %d misses during one outage, want at most 7:\n%s", warns, misses, logs.buf.String())
	}

	up.Restart()
	eventually(t, "/readyz says ready again", func() bool {
		r := p.get("/readyz")
		return r.status == http.StatusOK && string(r.body) == "ready\n"
	})
	eventually(t, "the upstream's return is logged", func() bool {
		return len(logs.find(t, "upstream answers again", map[string]any{"level": "INFO", "upstream": up.URL()})) == 1
	})
}
