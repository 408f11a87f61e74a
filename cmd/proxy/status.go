package main

import (
	"log/slog"
	"net/http"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/statuspage"
)

// statusPage is the page at GET /: what the cache holds, serves and
// fetches, read from the stack's parts at each view.
func (s *stack) statusPage(log *slog.Logger) http.Handler {
	var names []string
	for _, u := range s.upstreams.Clients() {
		names = append(names, u.String())
	}
	var bound statuspage.Bound = s.evict
	if s.fleetEvict != nil {
		bound = s.fleetEvict
	}
	cfg := statuspage.Config{
		Index:     s.store,
		Downloads: s.cache,
		Jobs:      s.prefetch,
		Warms:     s.warms,
		Bound:     bound,
		Counters:  s.cache,
		Traffic:   s.traffic,
		Upstreams: names,
		Storage:   s.storage,
		CacheDir:  s.store.Dir(),
		Degraded:  s.upstreams.Down,
	}
	if s.leases != nil { // --storage: a nil pointer would not be a nil interface
		cfg.Fills, cfg.Bucket = s.leases, s.bucket
	}
	if s.receiver != nil {
		cfg.Uploads = s.receiver
	}
	src := statuspage.NewCollector(cfg)
	return statuspage.Handler(src, statuspage.Options{Logger: log})
}
