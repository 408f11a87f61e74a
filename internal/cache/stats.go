package cache

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the cache's counts since New, as the status page shows them;
// the metrics count the same events.
type Stats struct {
	NarInfoHits, NarInfoMisses, NARHits, NARMisses int64
	// ServedCacheBytes are NAR bytes sent from disk, ServedUpstreamBytes
	// those streamed while fetched. SavedBytes is what the hits spared the
	// upstreams: for each NAR served from disk, its upstream file's size,
	// in proportion for a range; uploads count nothing.
	ServedCacheBytes, ServedUpstreamBytes, SavedBytes int64
	// VerifyFailures counts the answers refused, by check: signature,
	// narinfo, size, hash (every check listed, 0 or not).
	VerifyFailures map[string]int64
	// Recompressed counts the zstd files kept, RecompressMismatches the
	// originals that were not the NAR their narinfo names, RecompressErrors
	// the other failures (a NAR left as it is on purpose is neither).
	Recompressed, RecompressMismatches, RecompressErrors int64
	// RecompressInBytes and RecompressOutBytes are the original files read
	// and the zstd files kept; RecompressCPU the process CPU time spent.
	RecompressInBytes, RecompressOutBytes int64
	RecompressCPU                         time.Duration
}

// verifyChecks are the checks whose failures Stats counts.
var verifyChecks = [...]string{"signature", "narinfo", "size", "hash"}

// stats are the counters behind Stats.
type stats struct {
	narinfoHits, narinfoMisses, narHits, narMisses atomic.Int64
	servedCache, servedUpstream                    atomic.Int64
	verify                                         [len(verifyChecks)]atomic.Int64
	recDone, recMismatch, recErrors, recIn, recOut atomic.Int64
	recCPU                                         atomic.Int64 // nanoseconds

	savedMu sync.Mutex
	saved   float64 // in proportion: fractions of a byte add up
}

func (s *stats) verifyFailed(check string) {
	if i := slices.Index(verifyChecks[:], check); i >= 0 {
		s.verify[i].Add(1)
	}
}

func (s *stats) addSaved(n float64) {
	s.savedMu.Lock()
	s.saved += n
	s.savedMu.Unlock()
}

// Stats returns the counts so far.
func (c *Cache) Stats() Stats {
	s := &c.stats
	out := Stats{
		NarInfoHits: s.narinfoHits.Load(), NarInfoMisses: s.narinfoMisses.Load(),
		NARHits: s.narHits.Load(), NARMisses: s.narMisses.Load(),
		ServedCacheBytes: s.servedCache.Load(), ServedUpstreamBytes: s.servedUpstream.Load(),
		VerifyFailures: make(map[string]int64, len(verifyChecks)),
		Recompressed:   s.recDone.Load(), RecompressMismatches: s.recMismatch.Load(), RecompressErrors: s.recErrors.Load(),
		RecompressInBytes: s.recIn.Load(), RecompressOutBytes: s.recOut.Load(),
		RecompressCPU: time.Duration(s.recCPU.Load()),
	}
	for i, check := range verifyChecks {
		out.VerifyFailures[check] = s.verify[i].Load()
	}
	s.savedMu.Lock()
	out.SavedBytes = int64(s.saved)
	s.savedMu.Unlock()
	return out
}
