package server_test

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsProxy is a proxy over one fake upstream with its metrics on a
// fresh registry.
func metricsProxy(t *testing.T, cfg config) (*proxy, *fakeupstream.Upstream, *prometheus.Registry) {
	t.Helper()
	fu := fakeupstream.New(t)
	cfg.reg = prometheus.NewRegistry()
	cfg.ups = ups(fu)
	return newProxy(t, cfg), fu, cfg.reg
}

// want compares metric values; got and want are in one table so a failure
// shows every mismatch at once.
type want struct {
	what string
	got  float64
	want float64
}

func check(t *testing.T, ws ...want) {
	t.Helper()
	for _, w := range ws {
		if w.got != w.want {
			t.Errorf("%s = %v, want %v", w.what, w.got, w.want)
		}
	}
}

// sampleCount is how many observations the histogram series name{labels}
// holds in reg (0 when absent). testutil.ToFloat64 does not read histograms.
func sampleCount(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// TestMetricsNarInfo: a narinfo miss then hit, an unknown hash and an
// invalid name move the lookup, miss-log, upstream and request counters.
func TestMetricsNarInfo(t *testing.T) {
	p, fu, reg := metricsProxy(t, config{})
	m := p.metrics
	it := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), Compression: "none"})
	up := fu.URL()

	if r := p.get("/" + it.Hash + ".narinfo"); r.status != http.StatusOK {
		t.Fatalf("cold narinfo: %d", r.status)
	}
	check(t,
		want{"lookups{narinfo,miss}", testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "miss")), 1},
		want{"lookups{narinfo,hit}", testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "hit")), 0},
		want{"misses_recorded{fetched}", testutil.ToFloat64(m.MissesRecorded.WithLabelValues("fetched")), 1},
		want{"upstream_requests{narinfo,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "narinfo", "ok")), 1},
	)
	if n := sampleCount(t, reg, "nix_cache_proxy_upstream_request_duration_seconds", map[string]string{"upstream": up, "kind": "narinfo"}); n != 1 {
		t.Errorf("upstream narinfo duration observations: %d, want 1", n)
	}

	if r := p.get("/" + it.Hash + ".narinfo"); r.status != http.StatusOK {
		t.Fatalf("narinfo hit: %d", r.status)
	}
	if r := p.get("/" + fakeupstream.RandomHash() + ".narinfo"); r.status != http.StatusNotFound {
		t.Fatalf("unknown narinfo: %d", r.status)
	}
	if r := p.get("/not-a-hash.narinfo"); r.status != http.StatusBadRequest {
		t.Fatalf("invalid narinfo name: %d", r.status)
	}
	if r := p.get("/nix-cache-info"); r.status != http.StatusOK {
		t.Fatalf("nix-cache-info: %d", r.status)
	}
	check(t,
		want{"lookups{narinfo,hit}", testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "hit")), 1},
		// The invalid name is refused before any lookup.
		want{"lookups{narinfo,miss}", testutil.ToFloat64(m.Lookups.WithLabelValues("narinfo", "miss")), 2},
		want{"misses_recorded{not-found}", testutil.ToFloat64(m.MissesRecorded.WithLabelValues("not-found")), 1},
		want{"upstream_requests{narinfo,not_found}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "narinfo", "not_found")), 1},
		want{"requests{narinfo,200}", testutil.ToFloat64(m.Requests.WithLabelValues("narinfo", "200")), 2},
		want{"requests{narinfo,404}", testutil.ToFloat64(m.Requests.WithLabelValues("narinfo", "404")), 1},
		want{"requests{narinfo,400}", testutil.ToFloat64(m.Requests.WithLabelValues("narinfo", "400")), 1},
		want{"requests{nix-cache-info,200}", testutil.ToFloat64(m.Requests.WithLabelValues("nix-cache-info", "200")), 1},
	)
	if n := sampleCount(t, reg, "nix_cache_proxy_http_request_duration_seconds", map[string]string{"route": "narinfo"}); n != 4 {
		t.Errorf("narinfo request duration observations: %d, want 4", n)
	}
	// Nothing else was labelled: no hash, no client address.
	if n := testutil.CollectAndCount(m.Requests); n != 4 {
		t.Errorf("http_requests_total has %d series, want 4", n)
	}
}

// TestMetricsNARJoined: a cold NAR fetch joined by 4 more clients while the
// upstream holds the body is one upstream request; every client's request
// is a miss served from upstream, the in-flight gauges show one download
// with 5 clients while it runs and drop to 0 after; a later request is a hit
// served from the cache; and the store gauges count the new entry.
func TestMetricsNARJoined(t *testing.T) {
	const (
		size    = 1 << 20
		clients = 5
		early   = 64 << 10
	)
	p, fu, reg := metricsProxy(t, config{})
	m := p.metrics
	up := fu.URL()
	file := fakeupstream.RandomBytes(size)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
	nar := p.narURL(it.Hash)
	g := newGate()
	defer g.open()
	fu.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 64 << 10, HoldAt: 256 << 10, Hold: g.hold})

	type result struct {
		status int
		body   []byte
		err    error
	}
	results := make(chan result, clients)
	joined := make(chan struct{}, clients)
	fetch := func() {
		var res result
		defer func() { results <- res }()
		resp, err := p.client.Get(p.srv.URL + nar)
		if err != nil {
			res.err = err
			joined <- struct{}{}
			return
		}
		defer resp.Body.Close()
		res.status = resp.StatusCode
		var buf bytes.Buffer
		_, err = io.CopyN(&buf, resp.Body, early)
		joined <- struct{}{}
		if err == nil {
			_, err = io.Copy(&buf, resp.Body)
		}
		res.body, res.err = buf.Bytes(), err
	}
	go fetch()
	waitFor(t, "the upstream to send the first bytes", g.reached)
	for range clients - 1 {
		go fetch()
	}
	for range clients {
		waitFor(t, "a client to read its first bytes mid-download", joined)
	}
	check(t,
		want{"downloads_in_flight while held", testutil.ToFloat64(m.Downloads), 1},
		want{"download_clients while held", testutil.ToFloat64(m.DownloadClients), clients},
	)
	g.open()
	for range clients {
		r := waitFor(t, "a client to finish", results)
		if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, file) {
			t.Errorf("client: status %d, %d bytes, err %v", r.status, len(r.body), r.err)
		}
	}
	// A client has its last byte a moment before its handler returns,
	// and before the fill commits the NAR.
	eventually(t, "every NAR request is counted", func() bool {
		return testutil.ToFloat64(m.Requests.WithLabelValues("nar", "200")) == clients
	})
	p.settle()
	check(t,
		want{"upstream_requests{nar,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "nar", "ok")), 1},
		want{"upstream fetch count (fake upstream)", float64(fu.Count(it.NARPath)), 1},
		want{"upstream_fetched_bytes", testutil.ToFloat64(m.UpstreamBytes.WithLabelValues(up)), size},
		want{"lookups{nar,miss}", testutil.ToFloat64(m.Lookups.WithLabelValues("nar", "miss")), clients},
		want{"lookups{nar,hit}", testutil.ToFloat64(m.Lookups.WithLabelValues("nar", "hit")), 0},
		want{"served_bytes{upstream}", testutil.ToFloat64(m.ServedBytes.WithLabelValues("upstream")), clients * size},
		want{"served_bytes{cache}", testutil.ToFloat64(m.ServedBytes.WithLabelValues("cache")), 0},
		want{"downloads_in_flight after", testutil.ToFloat64(m.Downloads), 0},
		want{"download_clients after", testutil.ToFloat64(m.DownloadClients), 0},
		want{"verification_failures{hash}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("hash")), 0},
	)
	if n := sampleCount(t, reg, "nix_cache_proxy_upstream_request_duration_seconds", map[string]string{"upstream": up, "kind": "nar"}); n != 1 {
		t.Errorf("upstream NAR duration observations: %d, want 1", n)
	}

	if hit := p.get(nar); hit.status != http.StatusOK || !bytes.Equal(hit.body, file) {
		t.Fatalf("hit: %d, %d bytes", hit.status, len(hit.body))
	}
	check(t,
		want{"lookups{nar,hit}", testutil.ToFloat64(m.Lookups.WithLabelValues("nar", "hit")), 1},
		want{"served_bytes{cache}", testutil.ToFloat64(m.ServedBytes.WithLabelValues("cache")), size},
		want{"served_bytes{upstream}", testutil.ToFloat64(m.ServedBytes.WithLabelValues("upstream")), clients * size},
		want{"requests{nar,200}", testutil.ToFloat64(m.Requests.WithLabelValues("nar", "200")), clients + 1},
	)

	expected := `
# HELP nix_cache_proxy_store_entries Entries in the cache, by kind (narinfo, nar).
# TYPE nix_cache_proxy_store_entries gauge
nix_cache_proxy_store_entries{kind="nar"} 1
nix_cache_proxy_store_entries{kind="narinfo"} 1
# HELP nix_cache_proxy_store_size_bytes Total size of the NAR files in the cache.
# TYPE nix_cache_proxy_store_size_bytes gauge
nix_cache_proxy_store_size_bytes ` + strconv.Itoa(size) + "\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"nix_cache_proxy_store_entries", "nix_cache_proxy_store_size_bytes"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "nix_cache_proxy_disk_free_bytes", "nix_cache_proxy_disk_size_bytes"); n != 2 {
		t.Errorf("disk gauges: %d series, want 2", n)
	}
}

// TestMetricsFailures: refused signatures, NARs of the wrong hash or size
// and upstream errors are each counted once, under their own label.
func TestMetricsFailures(t *testing.T) {
	other, _ := fakeupstream.NewKey(t, "someone-else-1")
	tests := []struct {
		name string
		// path is published upstream; narFault and narInfoFault are
		// applied to its NAR and narinfo.
		path                   fakeupstream.Path
		narInfoFault, narFault fakeupstream.Fault
		// wantNarInfo is the narinfo's status; the NAR is fetched only
		// when it is 200.
		wantNarInfo int
		counters    func(p *proxy, up string) []want
	}{{
		name:        "bad signature",
		path:        fakeupstream.Path{SignWith: &other},
		wantNarInfo: http.StatusNotFound,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				{"verification_failures{signature}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("signature")), 1},
				// The upstream answered; the refusal is the proxy's.
				{"upstream_requests{narinfo,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "narinfo", "ok")), 1},
				{"misses_recorded{refused-signature}", testutil.ToFloat64(m.MissesRecorded.WithLabelValues("refused-signature")), 1},
				{"requests{narinfo,404}", testutil.ToFloat64(m.Requests.WithLabelValues("narinfo", "404")), 1},
			}
		},
	}, {
		name:        "hash mismatch",
		narFault:    fakeupstream.Fault{Corrupt: true},
		wantNarInfo: http.StatusOK,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				{"verification_failures{hash}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("hash")), 1},
				{"verification_failures{size}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("size")), 0},
				{"verification_failures{signature}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("signature")), 0},
				// The transfer itself went fine.
				{"upstream_requests{nar,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "nar", "ok")), 1},
				{"requests{nar,aborted}", testutil.ToFloat64(m.Requests.WithLabelValues("nar", "aborted")), 1},
				{"downloads_in_flight", testutil.ToFloat64(m.Downloads), 0},
				{"download_clients", testutil.ToFloat64(m.DownloadClients), 0},
			}
		},
	}, {
		name:        "Content-Length is not FileSize",
		narFault:    fakeupstream.Fault{Extra: 10},
		wantNarInfo: http.StatusOK,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				{"verification_failures{size}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("size")), 1},
				{"verification_failures{hash}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("hash")), 0},
				// Refused before the body: the client gets a status.
				{"requests{nar,404}", testutil.ToFloat64(m.Requests.WithLabelValues("nar", "404")), 1},
			}
		},
	}, {
		name:         "upstream 500",
		narInfoFault: fakeupstream.Fault{Status: http.StatusInternalServerError},
		wantNarInfo:  http.StatusNotFound,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				{"upstream_requests{narinfo,error}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "narinfo", "error")), 1},
				{"upstream_requests{narinfo,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "narinfo", "ok")), 0},
				{"misses_recorded{upstream-error}", testutil.ToFloat64(m.MissesRecorded.WithLabelValues("upstream-error")), 1},
				{"misses_recorded{not-found}", testutil.ToFloat64(m.MissesRecorded.WithLabelValues("not-found")), 0},
				{"verification_failures{signature}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("signature")), 0},
			}
		},
	}, {
		name:        "NAR cut short",
		narFault:    fakeupstream.Fault{CutAt: 32 << 10},
		wantNarInfo: http.StatusOK,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				// The headers came, the body broke: an upstream error.
				{"upstream_requests{nar,error}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "nar", "error")), 1},
				{"upstream_requests{nar,ok}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "nar", "ok")), 0},
				{"upstream_fetched_bytes", testutil.ToFloat64(m.UpstreamBytes.WithLabelValues(up)), 32 << 10},
				{"verification_failures{size}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("size")), 0},
			}
		},
	}, {
		name:        "upstream 500 on the NAR",
		narFault:    fakeupstream.Fault{Status: http.StatusInternalServerError},
		wantNarInfo: http.StatusOK,
		counters: func(p *proxy, up string) []want {
			m := p.metrics
			return []want{
				{"upstream_requests{nar,error}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(up, "nar", "error")), 1},
				{"upstream_fetched_bytes", testutil.ToFloat64(m.UpstreamBytes.WithLabelValues(up)), 0},
				{"served_bytes{upstream}", testutil.ToFloat64(m.ServedBytes.WithLabelValues("upstream")), 0},
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, fu, _ := metricsProxy(t, config{})
			path := tt.path
			path.File, path.Compression = fakeupstream.RandomBytes(64<<10), "xz"
			it := fu.Add(path)
			g := newGate()
			defer g.open()
			if tt.narFault.Corrupt {
				// Freeze the body until the client has its 200, so the
				// failure comes mid-body whatever the timing.
				tt.narFault.HoldAt, tt.narFault.Hold = len(path.File)/4, g.hold
			}
			fu.SetFault(it.NarInfoPath, tt.narInfoFault)
			fu.SetFault(it.NARPath, tt.narFault)
			r := p.get("/" + it.Hash + ".narinfo")
			if r.status != tt.wantNarInfo {
				t.Fatalf("narinfo: %d, want %d", r.status, tt.wantNarInfo)
			}
			if r.status == http.StatusOK {
				resp, err := p.client.Get(p.srv.URL + "/nar/" + it.FileHash + ".nar.xz")
				g.open()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				eventually(t, "the NAR request is counted", func() bool {
					return testutil.CollectAndCount(p.metrics.Requests) == 2 &&
						testutil.ToFloat64(p.metrics.DownloadClients) == 0
				})
			}
			check(t, tt.counters(p, fu.URL())...)
		})
	}
}

// TestMetricsEndpoint: /metrics serves the whole registry in the text
// format, every metric passes promlint, and the health endpoints answer.
func TestMetricsEndpoint(t *testing.T) {
	p, fu, reg := metricsProxy(t, config{})
	it := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1000), Compression: "none"})
	p.get(p.narURL(it.Hash))

	r := p.get("/metrics")
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: %d", r.status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, r.body)
	}
	for _, name := range []string{
		"nix_cache_proxy_http_requests_total", "nix_cache_proxy_http_request_duration_seconds",
		"nix_cache_proxy_cache_lookups_total", "nix_cache_proxy_served_bytes_total",
		"nix_cache_proxy_downloads_in_flight", "nix_cache_proxy_download_clients",
		"nix_cache_proxy_verification_failures_total", "nix_cache_proxy_misses_recorded_total",
		"nix_cache_proxy_upstream_requests_total", "nix_cache_proxy_upstream_request_duration_seconds",
		"nix_cache_proxy_upstream_fetched_bytes_total", "nix_cache_proxy_store_size_bytes",
		"nix_cache_proxy_store_entries", "nix_cache_proxy_disk_free_bytes", "nix_cache_proxy_disk_size_bytes",
		"nix_cache_proxy_prefetch_bytes_total",
		"nix_cache_proxy_upstream_breaker_state", "nix_cache_proxy_upstream_breaker_trips_total",
		"go_goroutines", "process_open_fds",
	} {
		if families[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := families["nix_cache_proxy_served_bytes_total"]; v != nil {
		for _, m := range v.GetMetric() {
			if m.GetLabel()[0].GetValue() == "upstream" && m.GetCounter().GetValue() != 1000 {
				t.Errorf("served_bytes_total{source=upstream} = %v, want 1000", m.GetCounter().GetValue())
			}
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}

	if r := p.get("/healthz"); r.status != http.StatusOK || string(r.body) != "ok\n" {
		t.Errorf("/healthz: %d %q", r.status, r.body)
	}
	if r := p.get("/readyz"); r.status != http.StatusOK || string(r.body) != "ready\n" {
		t.Errorf("/readyz: %d %q", r.status, r.body)
	}
	if ct := p.get("/readyz").header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/readyz Content-Type %q", ct)
	}

	// Free space below --min-free: alive, but not ready.
	low, _, _ := metricsProxy(t, config{minFree: math.MaxInt64})
	if r := low.get("/healthz"); r.status != http.StatusOK {
		t.Errorf("/healthz with low disk: %d", r.status)
	}
	if r := low.get("/readyz"); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "low on disk space") {
		t.Errorf("/readyz with --min-free above the free space: %d %q", r.status, r.body)
	}
}
