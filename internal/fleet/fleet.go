// Package fleet makes the proxies on one shared bucket fill each NAR once:
// a fill starts by taking a lease object with a conditional create
// (If-None-Match: *), renews it with compare-and-swap (If-Match), and
// names the URL where peers join the download in progress. A proxy that
// finds another's live lease streams the NAR from that proxy; one that
// finds an expired lease (its holder died) takes it over by
// compare-and-swap and fetches the NAR itself.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
)

// Bucket is what the fleet needs of the shared storage (*s3store.Bucket).
// Conditional writes that lose return an error wrapping
// s3store.ErrConflict; a missing object, fs.ErrNotExist.
type Bucket interface {
	CreateLease(ctx context.Context, name string, body []byte) (etag string, err error)
	ReplaceLease(ctx context.Context, name string, body []byte, etag string) (string, error)
	Lease(ctx context.Context, name string) (body []byte, etag string, err error)
	DeleteLease(ctx context.Context, name string) error
	Stat(name string) (int64, error)
}

// Options configure Fills. Zero values mean defaults.
type Options struct {
	// URL is where peers reach this proxy (--advertise-url); "" means
	// they cannot join its fills and wait for them to end instead.
	URL string
	// TTL is how long a lease lives unrenewed: how long a dead holder
	// holds up a fill. Default 30s; renewed every TTL/3.
	TTL time.Duration
	// Poll is how often a proxy waiting for a peer's fill looks again;
	// default 250ms.
	Poll    time.Duration
	Client  *http.Client
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Fills coordinates NAR fills with the other proxies on the bucket. It
// implements cache.Fleet.
type Fills struct {
	b      Bucket
	holder string
	opts   Options
	m      *metrics.Metrics
	log    *slog.Logger
	stats  struct{ taken, takenOver, lost, joins, joinErrors atomic.Int64 }
}

// Stats are this proxy's part in the fleet's fills since New, as the
// status page shows them.
type Stats struct {
	// LeasesTaken, LeasesTakenOver and LeasesLost count fill leases this
	// proxy took, took over from a proxy whose lease expired, and lost.
	LeasesTaken, LeasesTakenOver, LeasesLost int64
	// Joins counts fills joined from a peer's download in progress,
	// JoinErrors the peers that did not answer.
	Joins, JoinErrors int64
}

// Stats returns the counts so far.
func (f *Fills) Stats() Stats {
	s := &f.stats
	return Stats{s.taken.Load(), s.takenOver.Load(), s.lost.Load(), s.joins.Load(), s.joinErrors.Load()}
}

var _ cache.Fleet = (*Fills)(nil)

// New returns the fills of this proxy on b, under a fresh holder id.
func New(b Bucket, opts Options) *Fills {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{
			Proxy: nil, ResponseHeaderTimeout: 10 * time.Second, MaxIdleConnsPerHost: 16,
		}}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.Discard()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	id := make([]byte, 6)
	rand.Read(id)
	return &Fills{b: b, holder: host + "-" + hex.EncodeToString(id), opts: opts, m: opts.Metrics, log: opts.Logger}
}

// Holder is this proxy's id in the leases it writes.
func (f *Fills) Holder() string { return f.holder }

// lease is the body of a lease object.
type lease struct {
	Holder  string    `json:"holder"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

func (f *Fills) body() []byte {
	b, _ := json.Marshal(lease{Holder: f.holder, URL: f.opts.URL, Expires: time.Now().Add(f.opts.TTL).UTC()})
	return b
}

// Claim implements cache.Fleet.
func (f *Fills) Claim(ctx context.Context, name string) (cache.Claim, error) {
	key := "fill/" + name
	for {
		if _, err := f.b.Stat(name); err == nil {
			return cache.Claim{Stored: true}, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return cache.Claim{}, err
		}
		etag, err := f.take(ctx, key, func(ctx context.Context) (string, error) { return f.b.CreateLease(ctx, key, f.body()) })
		if err == nil {
			f.m.FleetLeases.WithLabelValues("taken").Inc()
			f.stats.taken.Add(1)
			return cache.Claim{Release: f.hold(key, etag, f.fillLost)}, nil
		}
		if !errors.Is(err, s3store.ErrConflict) {
			return cache.Claim{}, err
		}
		data, etag, err := f.b.Lease(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return cache.Claim{}, err
		}
		var l lease
		if json.Unmarshal(data, &l) != nil || time.Now().After(l.Expires) {
			// Its holder died (or wrote garbage): take it over, unless
			// another proxy does first.
			etag, err := f.take(ctx, key, func(ctx context.Context) (string, error) { return f.b.ReplaceLease(ctx, key, f.body(), etag) })
			if err == nil {
				f.m.FleetLeases.WithLabelValues("taken-over").Inc()
				f.stats.takenOver.Add(1)
				f.log.Warn("fleet: took over an expired fill lease", "nar", name, "from", l.Holder)
				return cache.Claim{Release: f.hold(key, etag, f.fillLost)}, nil
			}
			if !errors.Is(err, s3store.ErrConflict) {
				return cache.Claim{}, err
			}
			continue
		}
		if l.URL != "" && l.Holder != f.holder {
			claim, err := f.join(ctx, l.URL, name)
			if err == nil {
				f.m.FleetJoins.WithLabelValues("ok").Inc()
				f.stats.joins.Add(1)
				return claim, nil
			}
			f.m.FleetJoins.WithLabelValues("error").Inc()
			f.stats.joinErrors.Add(1)
			f.log.Debug("fleet: could not join a peer's fill", "nar", name, "peer", l.URL, "err", err)
		}
		select {
		case <-time.After(f.opts.Poll):
		case <-ctx.Done():
			return cache.Claim{}, ctx.Err()
		}
	}
}

// take runs write, which takes the lease key (a create or a takeover),
// to its answer even if ctx ends first. A write given up on the wire may
// still land, and a lease taken that way is nobody's: never renewed nor
// released, it holds up every proxy's fill of the NAR for a TTL (a claim
// whose deadline passed during its create left one after the holder's
// release in TestOneHolder). A lease taken after ctx ended is deleted
// again, and ctx's error returned.
func (f *Fills) take(ctx context.Context, key string, write func(context.Context) (string, error)) (string, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.TTL/3)
	defer cancel()
	etag, err := write(wctx)
	if err != nil || ctx.Err() == nil {
		return etag, err
	}
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.TTL/3)
	defer dcancel()
	if derr := f.b.DeleteLease(dctx, key); derr != nil {
		f.log.Warn("fleet: releasing a lease taken after its caller left failed", "lease", key, "err", derr)
	}
	return "", ctx.Err()
}

// join streams name from the peer at base that is filling it.
func (f *Fills) join(ctx context.Context, base, name string) (cache.Claim, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+FillPath+name, nil)
	if err != nil {
		return cache.Claim{}, err
	}
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		return cache.Claim{}, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return cache.Claim{}, fmt.Errorf("peer answered %s", resp.Status)
	}
	return cache.Claim{Peer: resp.Body, Size: resp.ContentLength}, nil
}

// FillPath is the route, below a proxy's URL, where peers join its fills.
const FillPath = "/_/fill/"

// fillLost is what losing a fill lease does: the fill finishes anyway,
// since NARs are content-addressed.
func (f *Fills) fillLost(key string) {
	f.log.Warn("fleet: lost a fill lease to another proxy", "lease", key)
	f.m.FleetLeases.WithLabelValues("lost").Inc()
	f.stats.lost.Add(1)
}

// hold renews the lease key every TTL/3 until the returned release is
// called, which deletes it. A renewal that loses means another proxy
// took the lease over (this one looked dead): renewals stop and lost is
// called.
func (f *Fills) hold(key, etag string, lost func(key string)) (release func()) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(f.opts.TTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.opts.TTL/3)
			next, err := f.b.ReplaceLease(ctx, key, f.body(), etag)
			cancel()
			switch {
			case err == nil:
				etag = next
			case errors.Is(err, s3store.ErrConflict):
				etag = ""
				lost(key)
				return
			default:
				f.log.Warn("fleet: renewing a fill lease failed", "lease", key, "err", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			if etag == "" {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := f.b.DeleteLease(ctx, key); err != nil {
				f.log.Warn("fleet: releasing a fill lease failed", "lease", key, "err", err)
			}
		})
	}
}
