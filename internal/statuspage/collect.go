package statuspage

import (
	"cmp"
	"context"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fleet"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// Source gives the page its data.
type Source interface {
	// Snapshot reads the current state. A part that cannot be read is left
	// empty and named in Snapshot.Errors; an error means no page at all.
	Snapshot(ctx context.Context) (*Snapshot, error)
}

// Index is the cache dir as the page reads it; *store.Store satisfies it.
type Index interface {
	Stats(ctx context.Context) (store.Stats, error)
	Disk() (free, total uint64, err error)
	Pins(ctx context.Context) ([]store.Pin, error)
	// Misses is the whole miss log, which the store bounds (10k rows by
	// default): small enough to read per page view.
	Misses(ctx context.Context) ([]store.Miss, error)
}

// Bound is the disk bound; *evict.Evictor satisfies it.
type Bound interface {
	MaxSize() int64
	Kept(ctx context.Context) ([]evict.Variant, error)
}

// Downloads lists the NAR downloads in flight; *cache.Cache satisfies it.
type Downloads interface {
	Downloads() []cache.Download
}

// Jobs lists the running and recent prefetch jobs; *prefetch.Manager
// satisfies it.
type Jobs interface {
	List() []prefetch.Status
}

// Traffic is each upstream's requests since the start; *upstream.Tally
// satisfies it.
type Traffic interface {
	Stats() []upstream.Stats
}

// Counters are the cache's lookups, bytes served, refusals and
// recompressions; *cache.Cache satisfies it.
type Counters interface {
	Stats() cache.Stats
}

// Uploads is what `nix copy --to` sent; *upload.Receiver satisfies it.
type Uploads interface {
	Stats() upload.Stats
}

// FleetFills is this proxy's part in the fleet's fills; *fleet.Fills
// satisfies it.
type FleetFills interface {
	Stats() fleet.Stats
}

// Bucket is the --storage bucket's operations; *s3store.Bucket satisfies it.
type Bucket interface {
	Stats() s3store.Stats
}

// Warms lists the flake attributes warmed since the start; *warm.Board
// satisfies it.
type Warms interface {
	List() []warm.Status
}

var (
	_ Index      = (*store.Store)(nil)
	_ Downloads  = (*cache.Cache)(nil)
	_ Bound      = (*evict.Evictor)(nil)
	_ Jobs       = (*prefetch.Manager)(nil)
	_ Warms      = (*warm.Board)(nil)
	_ Traffic    = (*upstream.Tally)(nil)
	_ FleetFills = (*fleet.Fills)(nil)
	_ Bucket     = (*s3store.Bucket)(nil)
	_ Uploads    = (*upload.Receiver)(nil)
	_ Counters   = (*cache.Cache)(nil)
	_ Source     = (*Collector)(nil)
)

// Config says where a Collector reads. Nil parts are shown as empty.
type Config struct {
	Index     Index
	Downloads Downloads
	Jobs      Jobs
	Warms     Warms
	Bound     Bound
	// Counters gives the cache's counters since start.
	Counters Counters
	// Traffic gives the upstreams' requests, answers and breakers.
	Traffic Traffic
	// Uploads gives the uploads' counters; nil when uploads are off.
	Uploads Uploads
	// Fills and Bucket give the shared storage's counters (--storage).
	Fills  FleetFills
	Bucket Bucket
	// Upstreams are the configured upstreams' names (upstream.Client's
	// String), in priority order: listed even before their first request.
	Upstreams []string
	// Storage is the --storage URL; "" for the cache dir.
	Storage  string
	CacheDir string
	// Started is when the process started; default when NewCollector runs.
	Started time.Time
	// TopMisses is how many misses are listed; default 10.
	TopMisses int
	// Version defaults to the binary's build info.
	Version *Version
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Degraded, if set, says why the proxy is degraded (no upstream
	// answers), or nil; *upstream.Group's Down does. /readyz says the same.
	Degraded func() error
}

// Collector builds Snapshots from the proxy's parts. It keeps a few
// minutes of upstream counters so an upstream's health reflects its recent
// answers rather than everything since start.
type Collector struct {
	cfg     Config
	version Version

	mu      sync.Mutex
	samples []sample // oldest first, spanning at most healthWindow
}

// NewCollector returns a Collector reading from cfg.
func NewCollector(cfg Config) *Collector {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.Now()
	}
	if cfg.TopMisses <= 0 {
		cfg.TopMisses = 10
	}
	c := &Collector{cfg: cfg}
	if cfg.Version != nil {
		c.version = *cfg.Version
	} else {
		c.version = buildVersion()
	}
	return c
}

// Snapshot implements Source.
func (c *Collector) Snapshot(ctx context.Context) (*Snapshot, error) {
	now := c.cfg.Now()
	s := &Snapshot{
		Taken:          now.UTC(),
		Started:        c.cfg.Started.UTC(),
		UptimeSeconds:  now.Sub(c.cfg.Started).Seconds(),
		Version:        c.version,
		VerifyFailures: map[string]int64{},
		Uploads:        map[string]int64{},
	}
	s.Storage = Storage{Backend: "dir", Location: c.cfg.CacheDir}
	if c.cfg.Storage != "" {
		s.Storage = Storage{Backend: "s3", Location: c.cfg.Storage}
	}
	if c.cfg.Counters != nil {
		readCounters(c.cfg.Counters.Stats(), s)
	}
	var traffic []upstream.Stats
	if c.cfg.Traffic != nil {
		traffic = c.cfg.Traffic.Stats()
	}
	s.Upstreams = c.upstreams(now, traffic)
	readFleet(c.cfg.Fills, c.cfg.Bucket, &s.Storage)
	if c.cfg.Uploads != nil {
		u := c.cfg.Uploads.Stats()
		maps.Copy(s.Uploads, u.Outcomes)
		s.UploadBytes = u.Bytes
	}
	if c.cfg.Degraded != nil {
		if err := c.cfg.Degraded(); err != nil {
			s.Degraded = err.Error()
		}
	}
	if ix := c.cfg.Index; ix != nil {
		c.readIndex(ctx, ix, s)
	}
	if c.cfg.Downloads != nil {
		s.Downloads = c.cfg.Downloads.Downloads()
	}
	if c.cfg.Jobs != nil {
		s.Jobs = recentJobs(c.cfg.Jobs.List(), 8)
	}
	if c.cfg.Warms != nil {
		s.Warms = c.cfg.Warms.List()
	}
	s.Kept = []evict.Variant{}
	if b := c.cfg.Bound; b != nil {
		s.Disk.MaxSize = b.MaxSize()
		if kept, err := b.Kept(ctx); err != nil {
			s.Errors = append(s.Errors, "kept variants: "+err.Error())
		} else {
			s.Kept = kept
		}
	}
	return s, nil
}

func (c *Collector) readIndex(ctx context.Context, ix Index, s *Snapshot) {
	if st, err := ix.Stats(ctx); err != nil {
		s.Errors = append(s.Errors, "store size: "+err.Error())
	} else {
		s.Disk.NarInfos, s.Disk.NARs, s.Disk.NARBytes = st.NarInfos, st.NARs, st.NARBytes
	}
	if free, total, err := ix.Disk(); err != nil {
		s.Errors = append(s.Errors, "disk space: "+err.Error())
	} else {
		s.Disk.FreeBytes, s.Disk.TotalBytes = int64(free), int64(total)
	}
	if pins, err := ix.Pins(ctx); err != nil {
		s.Errors = append(s.Errors, "pins: "+err.Error())
	} else {
		s.Pins = pins
	}
	if misses, err := ix.Misses(ctx); err != nil {
		s.Errors = append(s.Errors, "miss log: "+err.Error())
	} else {
		s.MissRows = len(misses)
		s.TopMisses = topMisses(misses, c.cfg.TopMisses)
	}
}

// topMisses returns the n most asked-for misses, the most recent first
// among equals. It sorts misses in place.
func topMisses(misses []store.Miss, n int) []store.Miss {
	// Rows of count 0 were made by prefetch in miss logs of older
	// versions: no client asked for them.
	misses = slices.DeleteFunc(misses, func(m store.Miss) bool { return m.Count == 0 })
	slices.SortStableFunc(misses, func(a, b store.Miss) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	return slices.Clone(misses[:min(n, len(misses))])
}

// recentJobs returns the running jobs and then the latest finished ones,
// newest first, at most n.
func recentJobs(jobs []prefetch.Status, n int) []prefetch.Status {
	out := slices.Clone(jobs)
	slices.SortStableFunc(out, func(a, b prefetch.Status) int {
		ar, br := a.State == prefetch.StateRunning, b.State == prefetch.StateRunning
		if ar != br {
			if ar {
				return -1
			}
			return 1
		}
		return b.Started.Compare(a.Started)
	})
	return out[:min(n, len(out))]
}

func buildVersion() Version {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Version{}
	}
	v := Version{Module: bi.Main.Path, Version: bi.Main.Version, Go: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// readFleet fills st's counters of the shared bucket from fills and b
// (either may be nil).
func readFleet(fills FleetFills, b Bucket, st *Storage) {
	if fills != nil {
		f := fills.Stats()
		st.LeasesTaken, st.LeasesTakenOver, st.LeasesLost = f.LeasesTaken, f.LeasesTakenOver, f.LeasesLost
		st.Joins, st.JoinErrors = f.Joins, f.JoinErrors
	}
	if b != nil {
		bs := b.Stats()
		st.BucketRequests, st.BucketErrors = bs.Requests, bs.Errors
		if bs.Requests > 0 {
			st.BucketLatencySec = bs.Latency.Seconds() / float64(bs.Requests)
		}
	}
}
