// Package statuspage renders the proxy's status page: one server-rendered
// HTML page (no JavaScript, no external assets: a LAN cache may have no
// internet) with the hit ratio, the bytes served from disk versus streamed
// from upstreams, the disk, the upstreams' health, the NAR downloads in
// flight, the pins, the most frequent misses and the prefetch jobs. With
// ?format=json it answers the same Snapshot as JSON, for scripts.
package statuspage

import (
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// Snapshot is everything the page shows, read at one moment. Counters are
// since the process started.
type Snapshot struct {
	Taken         time.Time `json:"taken"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Version       Version   `json:"version"`

	Lookups Lookups `json:"lookups"`
	Served  Served  `json:"served"`
	Disk    Disk    `json:"disk"`

	Storage Storage `json:"storage"`

	Upstreams []Upstream `json:"upstreams"`
	// Degraded says why the proxy serves hits only, as /readyz does ("no
	// upstream answers: …"); empty when it is not degraded.
	Degraded string `json:"degraded,omitempty"`
	// VerifyFailures counts upstream answers refused, by check
	// (signature, narinfo, size, hash).
	VerifyFailures map[string]int64 `json:"verify_failures"`
	// Uploads counts what `nix copy --to` sent, by outcome (ok, exists,
	// rejected, error), and UploadBytes the bytes kept.
	Uploads     map[string]int64 `json:"uploads"`
	UploadBytes int64            `json:"upload_bytes"`

	// Recompressed is what --recompress=zstd did since start.
	Recompressed Recompressed `json:"recompressed"`

	Downloads []cache.Download  `json:"downloads"`
	Jobs      []prefetch.Status `json:"prefetch_jobs"`
	Pins      []store.Pin       `json:"pins"`
	// Warms are the flake attributes warmed since the start.
	Warms []warm.Status `json:"warms,omitempty"`
	// Kept are the variants --keep-latest keeps, with their closures.
	Kept      []evict.Variant `json:"kept_variants"`
	TopMisses []store.Miss    `json:"top_misses"`
	MissRows  int             `json:"miss_rows"` // rows in the miss log
	Errors    []string        `json:"errors,omitempty"`
}

// Storage is where NAR files live and, with a shared bucket, this proxy's
// part in the fleet: counters since start.
type Storage struct {
	Backend  string `json:"backend"`  // "dir" or "s3"
	Location string `json:"location"` // the cache dir, or the s3:// URL
	// Fill leases this proxy took, took over from a dead proxy, or lost.
	LeasesTaken     int64 `json:"leases_taken"`
	LeasesTakenOver int64 `json:"leases_taken_over"`
	LeasesLost      int64 `json:"leases_lost"`
	// Fills joined from another proxy's download in progress, and joins
	// that failed (asked again).
	Joins      int64 `json:"joins"`
	JoinErrors int64 `json:"join_errors"`
	// Bucket operations, those that failed, and their mean latency.
	BucketRequests   int64   `json:"bucket_requests"`
	BucketErrors     int64   `json:"bucket_errors"`
	BucketLatencySec float64 `json:"bucket_latency_seconds"`
}

// Version identifies the running binary, from its build info.
type Version struct {
	Module   string `json:"module,omitempty"`
	Version  string `json:"version,omitempty"`
	Revision string `json:"revision,omitempty"` // VCS commit, shortened
	Modified bool   `json:"modified,omitempty"` // built from a dirty tree
	Go       string `json:"go,omitempty"`
}

// Lookups counts narinfo and NAR requests by whether the disk had them.
type Lookups struct {
	NarInfoHits   int64 `json:"narinfo_hits"`
	NarInfoMisses int64 `json:"narinfo_misses"`
	NARHits       int64 `json:"nar_hits"`
	NARMisses     int64 `json:"nar_misses"`
}

// NARRatio is the share of NAR requests answered from disk, in [0, 1];
// -1 when there were none.
func (l Lookups) NARRatio() float64 { return ratio(l.NARHits, l.NARHits+l.NARMisses) }

// NarInfoRatio is the share of narinfo requests answered from the index,
// in [0, 1]; -1 when there were none.
func (l Lookups) NarInfoRatio() float64 {
	return ratio(l.NarInfoHits, l.NarInfoHits+l.NarInfoMisses)
}

// Recompressed counts NARs recompressed to zstd: the LAN's clients unpack
// those several times faster than xz, at the price of CPUSeconds once.
type Recompressed struct {
	NARs       int64   `json:"nars"`
	Mismatches int64   `json:"mismatches"` // not the NAR their narinfo names: not kept
	Errors     int64   `json:"errors"`
	InBytes    int64   `json:"in_bytes"`  // the original files read
	OutBytes   int64   `json:"out_bytes"` // the zstd files kept
	CPUSeconds float64 `json:"cpu_seconds"`
}

// CPUPerGiB is the CPU seconds spent per GiB of zstd written; 0 before any.
func (r Recompressed) CPUPerGiB() float64 {
	if r.OutBytes == 0 {
		return 0
	}
	return r.CPUSeconds / (float64(r.OutBytes) / (1 << 30))
}

// Served is NAR bytes sent to clients.
type Served struct {
	CacheBytes    int64 `json:"cache_bytes"`    // from disk
	UpstreamBytes int64 `json:"upstream_bytes"` // streamed while fetched
	// SavedBytes is what the hits spared the upstreams: their files'
	// sizes, in their compression (a zstd file served for an xz one
	// counts the xz file), not the bytes sent from disk.
	SavedBytes int64 `json:"saved_bytes"`
}

// Total is every NAR byte sent.
func (s Served) Total() int64 { return s.CacheBytes + s.UpstreamBytes }

// CacheRatio is the share of bytes sent from disk; -1 when none were sent.
func (s Served) CacheRatio() float64 { return ratio(s.CacheBytes, s.Total()) }

// Disk is the cache's size and its file system's space.
type Disk struct {
	NarInfos   int   `json:"narinfos"`
	NARs       int64 `json:"nars"`
	NARBytes   int64 `json:"nar_bytes"`
	FreeBytes  int64 `json:"free_bytes"`
	TotalBytes int64 `json:"total_bytes"` // 0 when unknown
	MaxSize    int64 `json:"max_size"`    // --max-size; 0 for none
}

// OtherBytes is what else uses the file system.
func (d Disk) OtherBytes() int64 { return max(0, d.TotalBytes-d.FreeBytes-d.NARBytes) }

// Health of an upstream, from its answers in the recent window.
const (
	HealthOK       = "ok"       // no errors
	HealthDegraded = "degraded" // some errors
	HealthDown     = "down"     // mostly errors
	HealthIdle     = "idle"     // not asked recently
)

// Upstream is one upstream's requests since start, and its health.
type Upstream struct {
	Name     string `json:"name"`
	OK       int64  `json:"ok"`
	NotFound int64  `json:"not_found"`
	Errors   int64  `json:"errors"`
	// MeanLatencySeconds is the mean time to an answer (for NARs, to the
	// response headers); 0 without requests.
	MeanLatencySeconds float64 `json:"mean_latency_seconds"`
	FetchedBytes       int64   `json:"fetched_bytes"` // NAR bytes downloaded
	// Health judges the requests of the last few minutes (RecentRequests,
	// RecentErrors): an outage an hour ago does not make it red now.
	Health         string `json:"health"`
	RecentRequests int64  `json:"recent_requests"`
	RecentErrors   int64  `json:"recent_errors"`
	// Breaker is the upstream's circuit breaker: BreakerClosed (asked),
	// BreakerOpen (skipped after failures in a row, probed in the
	// background) or BreakerHalfOpen (one trial request in flight).
	Breaker string `json:"breaker"`
}

// Breaker states, as upstream.BreakerState's String names them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Requests is every request made to the upstream.
func (u Upstream) Requests() int64 { return u.OK + u.NotFound + u.Errors }

// ErrorRatio is the share of requests that failed; -1 without requests.
func (u Upstream) ErrorRatio() float64 { return ratio(u.Errors, u.Requests()) }

func ratio(a, b int64) float64 {
	if b <= 0 {
		return -1
	}
	return float64(a) / float64(b)
}
