package evict

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fleet"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// replica is one proxy's side of a bucket shared on a real S3 server
// (versitygw): its own index, its bucket client, its leases and its
// fleet eviction.
type replica struct {
	st *store.Store
	b  *s3store.Bucket
	fe *Fleet
	m  *metrics.Metrics
}

// lessor is cmd/proxy's mapping of fleet.ErrHeld.
type lessor struct{ f *fleet.Fills }

func (l lessor) TryLease(ctx context.Context, name string) (context.Context, func(), error) {
	held, release, err := l.f.TryLease(ctx, name)
	if errors.Is(err, fleet.ErrHeld) {
		err = fmt.Errorf("%w: %w", ErrLeaseHeld, err)
	}
	return held, release, err
}

func newReplica(t *testing.T, srv *s3test.Server, bucket string, cfg FleetConfig) *replica {
	t.Helper()
	loc, err := s3store.ParseURL(srv.URL(bucket, "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := s3store.Open(context.Background(), loc, s3store.Options{SpoolDir: filepath.Join(dir, "spool"), Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{b: b, m: metrics.New(prometheus.NewRegistry())}
	r.st, err = store.OpenWith(dir, store.Options{Files: b, Shared: b, Accessed: func(name string, at time.Time) { r.fe.Accessed(name, at) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.st.Close() })
	fills := fleet.New(b, fleet.Options{TTL: 3 * time.Second})
	cfg.Node, cfg.Metrics = fills.Holder(), r.m
	if cfg.Interval == 0 {
		// Passes are run by the test; this only makes NARs candidates
		// soon after they are written (see settle).
		cfg.Interval = 10 * time.Millisecond
	}
	r.fe = NewFleet(r.st, b, lessor{fills}, cfg)
	return r
}

// add stores p through r as a fill would: source and narinfo, then the
// NAR (which publishes the narinfo), then serves it once.
func (r *replica) add(t *testing.T, p tpath) {
	t.Helper()
	ctx := context.Background()
	var refs []string
	for _, ref := range p.refs {
		refs = append(refs, hashOf(ref)+"-p"+fmt.Sprint(ref))
	}
	name := p.name
	if name == "" {
		name = fmt.Sprintf("p%d", p.id)
	}
	sp := "/nix/store/" + hashOf(p.id) + "-" + name
	text := fmt.Sprintf("StorePath: %s\nURL: nar/%s\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
		sp, narOf(p.id), strings.Repeat("0", 52), p.size, strings.Join(refs, " "))
	src := store.NARSource{Hash: hashOf(p.id), StorePath: sp, Upstream: "http://up", URL: "http://up/nar/" + narOf(p.id),
		Seen: t0.Add(p.seen)}
	if p.upload {
		src.Upstream, src.URL = store.UploadedUpstream, ""
	}
	if err := r.st.PutNarInfo(ctx, hashOf(p.id), []byte(text), narOf(p.id), src); err != nil {
		t.Fatal(err)
	}
	w, err := r.st.CreateNAR(ctx, narOf(p.id))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, p.size))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r.serve(t, p.id)
}

// serve opens p's NAR as a client's request would.
func (r *replica) serve(t *testing.T, id int) {
	t.Helper()
	f, err := r.st.OpenNAR(context.Background(), narOf(id))
	if err != nil {
		t.Fatalf("serve p%d: %v", id, err)
	}
	f.Close()
	time.Sleep(2 * time.Millisecond) // distinct access times
}

// settle waits until the NARs just written are candidates for eviction:
// a pass leaves alone those written within two intervals and the second
// the bucket rounds write times to.
func settle() { time.Sleep(2100 * time.Millisecond) }

func (r *replica) pass(t *testing.T) Report {
	t.Helper()
	rep, err := r.fe.pass(context.Background(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// inBucket lists the ids of the NARs in the bucket, and their bytes.
func inBucket(t *testing.T, b *s3store.Bucket) (ids []int, total int64) {
	t.Helper()
	err := b.ListNARObjects(context.Background(), func(o s3store.NARObject) error {
		var id int
		fmt.Sscanf(o.Name, "%d.nar", &id)
		ids = append(ids, id)
		total += o.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids, total
}

func idsOf(evs []Evicted) []int {
	var ids []int
	for _, e := range evs {
		var id int
		fmt.Sscanf(e.NAR, "%d.nar", &id)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

const kib = 1 << 10

// TestFleetEvictionLRUGraceAndBound: replica A evicts, B only serves. A
// stores six NARs past the bound; B serves the two oldest, so across the
// fleet p3 and p4 are least recently served, and A marks them, not p1
// and p2. Nothing is deleted within the grace; B serves p3 during it,
// which keeps p3; after the grace p4 alone is deleted, and the next pass
// marks the next least recently served. Once graces pass the bucket is
// within the bound.
func TestFleetEvictionLRUGraceAndBound(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	const grace = 2 * time.Second
	a := newReplica(t, srv, bucket, FleetConfig{MaxSize: 450 * kib, Grace: grace})
	b := newReplica(t, srv, bucket, FleetConfig{})
	for id := 1; id <= 6; id++ {
		a.add(t, tpath{id: id, size: 100 * kib})
	}
	settle()
	b.serve(t, 1)
	b.serve(t, 2)
	b.pass(t) // B has no bound: it only publishes its accesses
	rep := a.pass(t)
	if got := idsOf(rep.Pending); !slices.Equal(got, []int{3, 4}) {
		t.Fatalf("marked %v, want [3 4] (p1, p2 served by B later)", got)
	}
	if ids, _ := inBucket(t, a.b); len(ids) != 6 {
		t.Fatalf("bucket holds %v right after marking; nothing may go within the grace", ids)
	}
	b.serve(t, 3) // during the grace
	b.pass(t)
	time.Sleep(grace)
	rep = a.pass(t)
	if got := idsOf(rep.Evicted); !slices.Equal(got, []int{4}) {
		t.Fatalf("deleted %v after the grace, want [4] (p3 was served during it)", got)
	}
	if got := testutil.ToFloat64(a.m.FleetEvictCancelled); got != 1 {
		t.Errorf("fleet_evict_cancelled_total = %v, want 1", got)
	}
	// 500 KiB stay, over 450: the same pass marks the least recently
	// served that is left.
	if got := idsOf(rep.Pending); !slices.Equal(got, []int{5}) {
		t.Errorf("marked %v after deleting p4, want [5]", got)
	}
	time.Sleep(grace)
	a.pass(t)
	ids, total := inBucket(t, a.b)
	if total > 450*kib {
		t.Errorf("bucket holds %d bytes (%v) after the graces, over its 450 KiB bound", total, ids)
	}
	if !slices.Equal(ids, []int{1, 2, 3, 6}) {
		t.Errorf("bucket holds %v, want [1 2 3 6]", ids)
	}
	// The narinfos stay with their sources, so p4 can be refilled.
	if _, err := a.b.NarInfo(context.Background(), hashOf(4)); err != nil {
		t.Errorf("narinfo of the evicted p4: %v", err)
	}
	if src, err := b.b.Source(context.Background(), narOf(4)); err != nil || src.URL == "" {
		t.Errorf("source of the evicted p4 = %+v, %v", src, err)
	}
	if got := testutil.ToFloat64(a.m.Evictions.WithLabelValues(ReasonSize)); got != 2 {
		t.Errorf("evictions_total{reason=size} = %v, want 2", got)
	}
}

// TestFleetPinsAndUploadsHold: a pin made on A (with its closure) and an
// upload through A hold when B evicts, however long ago they were
// served.
func TestFleetPinsAndUploadsHold(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	a := newReplica(t, srv, bucket, FleetConfig{})
	b := newReplica(t, srv, bucket, FleetConfig{MaxSize: 250 * kib, Grace: 200 * time.Millisecond})
	a.add(t, tpath{id: 2, size: 100 * kib})
	a.add(t, tpath{id: 1, size: 100 * kib, refs: []int{2}})
	a.add(t, tpath{id: 3, size: 100 * kib, upload: true})
	for id := 4; id <= 7; id++ {
		a.add(t, tpath{id: id, size: 100 * kib})
	}
	if err := a.st.PutPin(context.Background(), store.Pin{Hash: hashOf(1), StorePath: hashOf(1), Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	settle()
	a.pass(t)
	b.pass(t)
	time.Sleep(300 * time.Millisecond)
	rep := b.pass(t)
	if got := idsOf(rep.Evicted); !slices.Equal(got, []int{4, 5, 6, 7}) {
		t.Fatalf("B deleted %v, want [4 5 6 7]: p1 pinned on A, p2 in its closure, p3 an upload", got)
	}
	if ids, _ := inBucket(t, a.b); !slices.Equal(ids, []int{1, 2, 3}) {
		t.Errorf("bucket holds %v, want [1 2 3]", ids)
	}
	// Unpinned on B (it was pinned on A), p1 and p2 may go.
	if err := b.st.DeletePin(context.Background(), hashOf(1)); err != nil {
		t.Fatalf("unpin on B a path pinned on A: %v", err)
	}
	if hashes, err := a.b.PinnedHashes(context.Background()); err != nil || len(hashes) != 0 {
		t.Errorf("pins in the bucket after unpinning = %v, %v", hashes, err)
	}
	rep = b.pass(t)
	if got := idsOf(rep.Pending); len(got) == 0 || slices.Contains(got, 3) {
		t.Errorf("after unpinning B marked %v: want some of [1 2], never the upload p3", got)
	}
}

// TestFleetOneEvictorAtOnce: three replicas with a bound pass over and
// over at once; the lease lets one at a time run a pass.
func TestFleetOneEvictorAtOnce(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	var in, most, runs atomic.Int32
	hook := func(start bool) {
		if !start {
			in.Add(-1)
			return
		}
		runs.Add(1)
		n := in.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond) // a pass that takes a while
	}
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, bucket, FleetConfig{MaxSize: 1 << 30, Grace: time.Hour, passHook: hook}))
	}
	rs[0].add(t, tpath{id: 1, size: kib})
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if _, err := r.fe.pass(context.Background(), false, false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d passes ran at once; the lease allows 1", most.Load())
	}
	var skipped float64
	for _, r := range rs {
		skipped += testutil.ToFloat64(r.m.FleetEvictPasses.WithLabelValues("held-elsewhere"))
	}
	if runs.Load() < 3 || skipped == 0 {
		t.Errorf("%d passes ran, %v found the lease held: the test did not race them", runs.Load(), skipped)
	}
	t.Logf("%d passes ran, %v found the lease held", runs.Load(), skipped)
	// Collect (gc) while another proxy holds the lease says so.
	held, release, err := lessor{fleet.New(rs[0].b, fleet.Options{TTL: 3 * time.Second})}.TryLease(context.Background(), evictLease)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	_ = held
	if _, err := rs[1].fe.Collect(context.Background(), false); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("gc while another proxy evicts: %v, want ErrLeaseHeld", err)
	}
}

// TestFleetAccessRecords: two proxies' records merge to the latest access
// of each NAR; compaction folds the records of hours past into the merged
// one, keeping only NARs still in the bucket, and the result is the same.
func TestFleetAccessRecords(t *testing.T) {
	b := newMemMeta()
	ctx := context.Background()
	now := time.Now()
	x, y := newAccessRecords(b, "x"), newAccessRecords(b, "y")
	x.touch("a.nar", now.Add(-3*time.Second))
	x.touch("b.nar", now.Add(-1*time.Second))
	y.touch("a.nar", now.Add(-2*time.Second))
	y.touch("a.nar", now.Add(-5*time.Second)) // older than y's last: ignored
	for _, r := range []*accessRecords{x, y} {
		if err := r.publish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	puts := b.puts
	if err := x.publish(ctx); err != nil || b.puts != puts {
		t.Errorf("publish with nothing new wrote %d records (%v)", b.puts-puts, err)
	}
	// A record of an hour long past, from a proxy since gone.
	old := now.UTC().Add(-3 * time.Hour).Format(periodLayout)
	b.objs[accessDir+old+"/z"] = []byte(`{"c.nar": 1000, "gone.nar": 2000}`)
	fa, err := loadAccess(ctx, b, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"a.nar": now.Add(-2 * time.Second).UnixMilli(), "b.nar": now.Add(-time.Second).UnixMilli(), "c.nar": 1000, "gone.nar": 2000}
	if fmt.Sprint(fa.last) != fmt.Sprint(want) {
		t.Errorf("merged %v, want %v", fa.last, want)
	}
	if err := fa.compact(ctx, b, func(name string) bool { return name != "gone.nar" }); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.objs[accessDir+old+"/z"]; ok {
		t.Error("the old record is still there after compaction")
	}
	fa, err = loadAccess(ctx, b, now)
	if err != nil {
		t.Fatal(err)
	}
	delete(want, "gone.nar")
	if fmt.Sprint(fa.last) != fmt.Sprint(want) {
		t.Errorf("after compaction %v, want %v", fa.last, want)
	}
}

// memMeta is the records part of a bucket, in memory.
type memMeta struct {
	FleetBucket // the rest: unused
	mu          sync.Mutex
	objs        map[string][]byte
	puts        int
}

func newMemMeta() *memMeta { return &memMeta{objs: map[string][]byte{}} }

func (m *memMeta) GetMeta(_ context.Context, rel string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[rel]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return b, nil
}

func (m *memMeta) PutMeta(_ context.Context, rel string, body []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[rel] = body
	m.puts++
	return nil
}

func (m *memMeta) DeleteMeta(_ context.Context, rel string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, rel)
	return nil
}

func (m *memMeta) ListMeta(_ context.Context, prefix string, fn func(string) error) error {
	m.mu.Lock()
	var keys []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}
