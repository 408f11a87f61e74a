// Package metrics defines the proxy's Prometheus metrics in one place, so
// their names, labels and meaning are listed once (docs/operations.md's
// table mirrors this file, TestDocsTable checks it). Components get the
// *Metrics and update its fields; nothing is registered globally. Label
// values are drawn from small fixed sets or the configured upstreams: never
// a store hash or a client address.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "nix_cache_proxy"

// Metrics are the proxy's own metrics.
type Metrics struct {
	// HTTP side.
	Requests        *prometheus.CounterVec   // route, code
	RequestDuration *prometheus.HistogramVec // route

	// Cache.
	Lookups          *prometheus.CounterVec   // kind (narinfo, nar), result (hit, miss)
	ServedBytes      *prometheus.CounterVec   // source (cache, upstream)
	SavedBytes       prometheus.Counter       // upstream bytes hits spared
	Downloads        prometheus.Gauge         // NAR downloads in flight
	DownloadClients  prometheus.Gauge         // clients following those downloads
	VerifyFailures   *prometheus.CounterVec   // check (signature, narinfo, size, hash)
	MissesRecorded   *prometheus.CounterVec   // outcome
	PrefetchPending  prometheus.Gauge         // paths queued or downloading in prefetch jobs
	PrefetchBytes    prometheus.Counter       // NAR bytes brought in by prefetch jobs
	UpstreamRequests *prometheus.CounterVec   // upstream, kind (narinfo, nar, other), outcome (ok, not_found, error)
	UpstreamDuration *prometheus.HistogramVec // upstream, kind
	UpstreamBytes    *prometheus.CounterVec   // upstream
	BreakerState     *prometheus.GaugeVec     // upstream: 0 closed, 1 open, 2 half-open
	BreakerTrips     *prometheus.CounterVec   // upstream

	// Uploads.
	Uploads     *prometheus.CounterVec // kind (nar, narinfo, ls, log, realisation), outcome (ok, exists, rejected, error)
	UploadBytes *prometheus.CounterVec // kind

	// Disk bound.
	Evictions    *prometheus.CounterVec // reason (size, free-space, retention)
	EvictedBytes prometheus.Counter     // bytes of NAR files evicted
	StoreMaxSize prometheus.Gauge       // --max-size; 0 for none
	NARNotKept   *prometheus.CounterVec // reason (no-room, disk-error)
	// PrunedNarInfos counts narinfos (with their origin records) pruned
	// from the index: NAR evicted, unused longer than clients hold them.
	PrunedNarInfos prometheus.Counter

	// Several proxies on one bucket (--storage s3://).
	FleetLeases            *prometheus.CounterVec // event (taken, taken-over, lost)
	FleetJoins             *prometheus.CounterVec // result (ok, error)
	FleetEvictPasses       *prometheus.CounterVec // result (run, held-elsewhere, error)
	FleetEvictLeaseHeld    prometheus.Gauge       // 1 while this proxy evicts for the fleet
	FleetEvictPendingFiles prometheus.Gauge       // NARs marked, waiting for their grace
	FleetEvictPendingBytes prometheus.Gauge
	FleetEvictCancelled    prometheus.Counter       // marked NARs kept: served or pinned during the grace
	FleetBucketBytes       prometheus.Gauge         // the bucket's NAR bytes at the last pass
	BucketRequests         *prometheus.CounterVec   // operation, result (ok, not-found, conflict, error)
	BucketDuration         *prometheus.HistogramVec // operation

	// Recompression to zstd.
	Recompressed    *prometheus.CounterVec // result (done, mismatch, incompressible, no-room, error)
	RecompressBytes *prometheus.CounterVec // direction (in, out)
	RecompressCPU   prometheus.Counter     // CPU seconds spent transcoding
}

// ObserveBucket records one bucket operation (s3store.Options.Observe).
func (m *Metrics) ObserveBucket(op, result string, d time.Duration) {
	m.BucketRequests.WithLabelValues(op, result).Inc()
	m.BucketDuration.WithLabelValues(op).Observe(d.Seconds())
}

// New creates the metrics and registers them, with Go and process
// collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	var b builder
	m := &Metrics{
		Requests: b.counterVec("http_requests_total", []string{"route", "code"},
			"HTTP requests answered, by route and status code."),
		RequestDuration: b.histogramVec("http_request_duration_seconds", []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}, []string{"route"},
			"Time to answer an HTTP request (for NARs: to send the whole body), by route."),
		Lookups: b.counterVec("cache_lookups_total", []string{"kind", "result"},
			"Narinfo and NAR requests, by whether the local cache had them (hit) or not (miss)."),
		ServedBytes: b.counterVec("served_bytes_total", []string{"source"},
			"NAR bytes sent to clients, by source: from disk (cache) or streamed while fetched (upstream)."),
		SavedBytes: b.counter("upstream_bytes_saved_total",
			"Upstream bytes the clients did not have to fetch: for each NAR served from disk, the size of the upstream's file "+
				"(its compression: the xz file of a NAR recompressed to zstd), in proportion for a range; uploads count nothing."),
		Downloads: b.gauge("downloads_in_flight",
			"NAR downloads from upstreams in progress."),
		DownloadClients: b.gauge("download_clients",
			"Clients (and prefetch jobs) following in-flight NAR downloads."),
		VerifyFailures: b.counterVec("verification_failures_total", []string{"check"},
			"Upstream answers refused: narinfo without a trusted signature (signature), narinfo unparsable, for another path or with a URL on another host (narinfo), downloaded NAR of the wrong size or sha256 (size, hash)."),
		Uploads: b.counterVec("uploads_total", []string{"kind", "outcome"},
			"PUTs from `nix copy --to`, by kind (nar, narinfo, ls, log, realisation) and outcome (ok, exists, rejected, error)."),
		UploadBytes: b.counterVec("upload_bytes_total", []string{"kind"},
			"Bytes received by uploads that were kept, by kind."),
		MissesRecorded: b.counterVec("misses_recorded_total", []string{"outcome"},
			"Narinfo lookups not answered from the local cache, by outcome (fetched, not-found, upstream-error)."),
		PrefetchBytes: b.counter("prefetch_bytes_total",
			"NAR bytes brought into the cache by prefetch jobs."),
		UpstreamRequests: b.counterVec("upstream_requests_total", []string{"upstream", "kind", "outcome"},
			"Requests to upstream caches, by upstream, kind (narinfo, nar, other) and outcome (ok, not_found, error)."),
		UpstreamDuration: b.histogramVec("upstream_request_duration_seconds", []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, []string{"upstream", "kind"},
			"Time to an upstream's answer (for NARs: to the response headers), by upstream and kind."),
		UpstreamBytes: b.counterVec("upstream_fetched_bytes_total", []string{"upstream"},
			"NAR bytes downloaded from each upstream."),
		Evictions: b.counterVec("evictions_total", []string{"reason"},
			"NAR files evicted, by reason: the cache passed --max-size (size), free space fell under --min-free (free-space), gc dropped a variant --keep-latest no longer keeps (retention)."),
		EvictedBytes: b.counter("evicted_bytes_total",
			"Bytes of NAR files evicted, counted once per file."),
		PrunedNarInfos: b.counter("pruned_narinfos_total",
			"Narinfos pruned from the index with their origin records: their NAR was evicted and they were neither served nor stored for longer than --prune-after."),
		StoreMaxSize: b.gauge("store_max_size_bytes",
			"The cache's bound (--max-size): NAR files plus index; 0 when there is none."),
		NARNotKept: b.counterVec("nar_not_kept_total", []string{"reason"},
			"NARs streamed to clients without being kept, by reason: no room within the bound (no-room), writing to the cache dir failed (disk-error)."),
		FleetLeases: b.counterVec("fleet_fill_leases_total", []string{"event"},
			"Fill leases on the shared bucket: taken (this proxy fetches the NAR), taken-over (from a proxy whose lease expired), lost (another proxy took this one's over)."),
		FleetJoins: b.counterVec("fleet_fill_joins_total", []string{"result"},
			"NAR fills joined from another proxy's download in progress instead of the upstream: ok, or error (the peer did not answer; asked again)."),
		FleetEvictPasses: b.counterVec("fleet_evict_passes_total", []string{"result"},
			"Fleet eviction passes this proxy tried (--storage s3:// with --max-size): run (it held the eviction lease), held-elsewhere (another proxy was evicting), error."),
		FleetEvictLeaseHeld: b.gauge("fleet_evict_lease_held",
			"1 while this proxy holds the fleet's eviction lease and runs a pass over the bucket."),
		FleetEvictPendingFiles: b.gauge("fleet_evict_pending_files",
			"NARs marked for deletion from the bucket, waiting for --evict-grace, as of this proxy's last pass holding the eviction lease."),
		FleetEvictPendingBytes: b.gauge("fleet_evict_pending_bytes",
			"Bytes of the NARs marked for deletion from the bucket, as of this proxy's last pass holding the eviction lease."),
		FleetEvictCancelled: b.counter("fleet_evict_cancelled_total",
			"NARs marked for deletion and then kept, because a proxy served them (or a pin covered them) during the grace period."),
		FleetBucketBytes: b.gauge("fleet_bucket_nar_bytes",
			"Bytes of NAR objects in the bucket, as this proxy's last pass holding the eviction lease measured them."),
		BucketRequests: b.counterVec("bucket_requests_total", []string{"operation", "result"},
			"Operations on the --storage bucket, by S3 operation and result: ok, not-found, conflict (a conditional write lost), error."),
		BucketDuration: b.histogramVec("bucket_request_duration_seconds", []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}, []string{"operation"},
			"Time of an operation on the --storage bucket to its response headers, retries included."),
		Recompressed: b.counterVec("recompressed_nars_total", []string{"result"},
			"NARs recompressed to zstd, by result: kept (done), not the NAR its narinfo names (mismatch), an uncompressed NAR zstd would not shrink, left as it is (incompressible), no room within the disk bound for the zstd file, left as it is (no-room), failed otherwise (error)."),
		RecompressBytes: b.counterVec("recompressed_bytes_total", []string{"direction"},
			"Bytes of NAR files recompressed to zstd: the original files read (in), the zstd files kept (out)."),
		RecompressCPU: b.counter("recompress_cpu_seconds_total",
			"CPU seconds the process spent while recompressing NARs to zstd (process CPU time over each transcode: it includes whatever else ran meanwhile)."),
		BreakerState: b.gaugeVec("upstream_breaker_state", []string{"upstream"},
			"Each upstream's circuit breaker: 0 closed (asked), 1 open (skipped after consecutive failures), 2 half-open (one trial request in flight)."),
		BreakerTrips: b.counterVec("upstream_breaker_trips_total", []string{"upstream"},
			"Times an upstream's breaker opened after being closed."),
	}
	reg.MustRegister(append(b, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))...)
	// Pre-create the series alerts and dashboards read, so they are 0
	// rather than absent before the first event.
	for _, kind := range []string{"narinfo", "nar"} {
		for _, result := range []string{"hit", "miss"} {
			m.Lookups.WithLabelValues(kind, result)
		}
	}
	for _, series := range []struct {
		vec    *prometheus.CounterVec
		values []string
	}{
		{m.ServedBytes, []string{"cache", "upstream"}},
		{m.VerifyFailures, []string{"signature", "narinfo", "size", "hash"}},
		{m.Evictions, []string{"size", "free-space", "retention"}},
		{m.NARNotKept, []string{"no-room", "disk-error"}},
		{m.FleetLeases, []string{"taken", "taken-over", "lost"}},
		{m.FleetEvictPasses, []string{"run", "held-elsewhere", "error"}},
		{m.FleetJoins, []string{"ok", "error"}},
		{m.Recompressed, []string{"done", "mismatch", "incompressible", "no-room", "error"}},
		{m.RecompressBytes, []string{"in", "out"}},
	} {
		for _, v := range series.values {
			series.vec.WithLabelValues(v)
		}
	}
	return m
}

// Discard returns metrics registered nowhere, for components used without
// a registry (tests, the admin subcommands).
func Discard() *Metrics { return New(prometheus.NewRegistry()) }

// RegisterPrefetch adds the gauge of paths that running prefetch jobs have
// yet to cache, read from pending at scrape time.
func RegisterPrefetch(reg prometheus.Registerer, pending func() int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "prefetch_pending_paths",
		Help: "Paths that running prefetch jobs have found and yet to cache.",
	}, func() float64 { return float64(pending()) }))
}

// RegisterConnections adds the gauges of client connections open on the
// main listener, read from open at scrape time, and of their bound (0: no
// bound), so an alert can fire before clients start to queue.
func RegisterConnections(reg prometheus.Registerer, open func() int, max int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_connections_open",
		Help: "Client connections open on the main listener.",
	}, func() float64 { return float64(open()) }))
	bound := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_connections_max",
		Help: "The bound on client connections (--max-connections); 0 for none.",
	})
	bound.Set(float64(max))
	reg.MustRegister(bound)
}

// UpstreamRequest records one upstream request.
func (m *Metrics) UpstreamRequest(upstream, kind, outcome string, d time.Duration) {
	m.UpstreamRequests.WithLabelValues(upstream, kind, outcome).Inc()
	m.UpstreamDuration.WithLabelValues(upstream, kind).Observe(d.Seconds())
}

// UpstreamFetched records NAR bytes received from an upstream.
func (m *Metrics) UpstreamFetched(upstream string, n int64) {
	m.UpstreamBytes.WithLabelValues(upstream).Add(float64(n))
}

// UpstreamBreaker records an upstream's breaker state (0 closed, 1 open, 2
// half-open) and counts a trip.
func (m *Metrics) UpstreamBreaker(upstream string, state int, tripped bool) {
	m.BreakerState.WithLabelValues(upstream).Set(float64(state))
	trips := m.BreakerTrips.WithLabelValues(upstream) // 0 from the start
	if tripped {
		trips.Inc()
	}
}

// builder makes the metrics of a New call, each named once: it keeps every
// one it makes, for New to register them all.
type builder []prometheus.Collector

// keep adds c to b and returns it.
func keep[C prometheus.Collector](b *builder, c C) C {
	*b = append(*b, c)
	return c
}

func (b *builder) counter(name, help string) prometheus.Counter {
	return keep(b, prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}))
}

func (b *builder) counterVec(name string, labels []string, help string) *prometheus.CounterVec {
	return keep(b, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels))
}

func (b *builder) gauge(name, help string) prometheus.Gauge {
	return keep(b, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}))
}

func (b *builder) gaugeVec(name string, labels []string, help string) *prometheus.GaugeVec {
	return keep(b, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels))
}

func (b *builder) histogramVec(name string, buckets []float64, labels []string, help string) *prometheus.HistogramVec {
	opts := prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}
	return keep(b, prometheus.NewHistogramVec(opts, labels))
}
