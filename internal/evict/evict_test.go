package evict

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// diskStore is a real store whose free space the test sets.
type diskStore struct {
	*store.Store
	free atomic.Int64
}

func (d *diskStore) Disk() (uint64, uint64, error) {
	return uint64(d.free.Load()), 1 << 40, nil
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newDiskStore(t *testing.T) *diskStore {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := &diskStore{Store: st}
	d.free.Store(1 << 40)
	return d
}

// tpath is a store path to put in the test store.
type tpath struct {
	id     int    // makes the hash and the NAR name
	name   string // after "<hash>-"; default "p<id>"
	size   int
	refs   []int
	upload bool // no upstream: never evicted
	seen   time.Duration
	narOf  int  // share the NAR of another path id; 0: its own
	noNAR  bool // narinfo only: the NAR is not on disk (yet)
}

func hashOf(id int) string { return fmt.Sprintf("%032d", id) }
func narOf(id int) string  { return fmt.Sprintf("%052d.nar", id) }

// add stores p's narinfo and NAR file; the NAR is then read, so the order
// of add calls is the order of last access.
func (d *diskStore) add(t *testing.T, p tpath) {
	t.Helper()
	ctx := context.Background()
	name := p.name
	if name == "" {
		name = fmt.Sprintf("p%d", p.id)
	}
	narID := p.id
	if p.narOf != 0 {
		narID = p.narOf
	}
	var refs []string
	for _, r := range p.refs {
		refs = append(refs, hashOf(r)+"-p"+fmt.Sprint(r))
	}
	sp := "/nix/store/" + hashOf(p.id) + "-" + name
	text := fmt.Sprintf("StorePath: %s\nURL: nar/%s\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
		sp, narOf(narID), strings.Repeat("0", 52), p.size, strings.Join(refs, " "))
	src := store.NARSource{Hash: hashOf(p.id), StorePath: sp, Upstream: "http://up", URL: "http://up/nar/" + narOf(narID),
		Seen: t0.Add(p.seen)}
	if p.upload {
		src.Upstream, src.URL = "", ""
	}
	if err := d.PutNarInfo(ctx, hashOf(p.id), []byte(text), narOf(narID), src); err != nil {
		t.Fatal(err)
	}
	if p.narOf != 0 || p.noNAR {
		return
	}
	w, err := d.CreateNAR(ctx, narOf(narID))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, p.size))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	d.touch(t, p.id)
}

// touch serves p's NAR, making it the most recently used.
func (d *diskStore) touch(t *testing.T, id int) {
	t.Helper()
	f, err := d.OpenNAR(context.Background(), narOf(id))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	time.Sleep(time.Millisecond) // distinct access times
}

func (d *diskStore) has(id int) bool {
	ok, _ := d.HasNAR(context.Background(), narOf(id))
	return ok
}

func evictedNames(r Report) []string {
	var out []string
	for _, e := range r.Evicted {
		out = append(out, e.NAR)
	}
	slices.Sort(out)
	return out
}

func names(ids ...int) []string {
	var out []string
	for _, id := range ids {
		out = append(out, narOf(id))
	}
	slices.Sort(out)
	return out
}

const kb = 100 << 10

// boundFor returns a --max-size that makes the next pass evict about want
// bytes: the current size, less want, over the 90 % low watermark.
func boundFor(d *diskStore, want int64) int64 {
	st, _ := d.Stats(context.Background())
	target := st.NARBytes + d.IndexSize() - want
	return target * 10 / 9
}

func TestPassOrderAndWatermark(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 6; i++ {
		d.add(t, tpath{id: i, size: kb})
	}
	d.touch(t, 1) // 1 is now the most recent; 2 the least
	m := metrics.Discard()
	max := boundFor(d, 2*kb+kb/2) // needs three files gone
	e := New(d, Config{MaxSize: max, Metrics: m})
	rep, err := e.Pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := evictedNames(rep), names(2, 3, 4); !slices.Equal(got, want) {
		t.Errorf("evicted %v, want the three least recently served %v", got, want)
	}
	st, _ := d.Stats(context.Background())
	if total := st.NARBytes + d.IndexSize(); total > lowWater(max) {
		t.Errorf("after the pass %d bytes, over the low watermark %d", total, lowWater(max))
	}
	if rep.Reasons[0].Reason != ReasonSize || rep.Reasons[0].Files != 3 || rep.Reasons[0].Bytes != 3*kb {
		t.Errorf("reasons %+v", rep.Reasons)
	}
	if got := testutil.ToFloat64(m.EvictedBytes); got != 3*kb {
		t.Errorf("evicted_bytes_total %v", got)
	}
	if got := testutil.ToFloat64(m.Evictions.WithLabelValues(ReasonSize)); got != 3 {
		t.Errorf("evictions_total{size} %v", got)
	}
	// The narinfos and sources stay: the NARs can be refilled.
	for _, id := range []int{2, 3, 4} {
		if _, err := d.NarInfo(context.Background(), hashOf(id)); err != nil {
			t.Errorf("narinfo %d gone: %v", id, err)
		}
		if _, err := d.NARSource(context.Background(), narOf(id)); err != nil {
			t.Errorf("NAR source %d gone: %v", id, err)
		}
	}
	// Under the bound now: the next pass does nothing.
	if rep, err := e.Pass(context.Background(), false); err != nil || len(rep.Evicted) != 0 {
		t.Errorf("second pass evicted %v, %v", evictedNames(rep), err)
	}
}

func TestPassDryRunEvictsNothing(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 3; i++ {
		d.add(t, tpath{id: i, size: kb})
	}
	e := New(d, Config{MaxSize: boundFor(d, kb/2)})
	rep, err := e.Pass(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(rep); !slices.Equal(got, names(1)) {
		t.Errorf("dry run chose %v, want %v", got, names(1))
	}
	if !d.has(1) {
		t.Error("dry run evicted")
	}
}

func TestPassFreeSpace(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 5; i++ {
		d.add(t, tpath{id: i, size: 40 << 20})
	}
	// No --max-size: the default still keeps the disk from filling.
	const minFree = 100 << 20
	d.free.Store(minFree - 10<<20)
	e := New(d, Config{MinFree: minFree})
	rep, err := e.Pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	// Need: 10 MiB under, plus the 64 MiB margin = 74 MiB: two files.
	if got := evictedNames(rep); !slices.Equal(got, names(1, 2)) {
		t.Errorf("evicted %v, want %v", got, names(1, 2))
	}
	if rep.Reasons[1].Reason != ReasonFreeSpace || rep.Reasons[1].Files != 2 {
		t.Errorf("reasons %+v", rep.Reasons)
	}
}

func TestPinsClosuresAndUploadsStay(t *testing.T) {
	d := newDiskStore(t)
	d.add(t, tpath{id: 1, size: kb})                 // referenced by the pin
	d.add(t, tpath{id: 2, size: kb, refs: []int{1}}) // pinned
	d.add(t, tpath{id: 3, size: kb, upload: true})   // no upstream
	d.add(t, tpath{id: 4, size: kb})                 // ordinary
	d.add(t, tpath{id: 5, size: kb})                 // ordinary
	if err := d.PutPin(context.Background(), store.Pin{Hash: hashOf(2), StorePath: hashOf(2), Since: t0}); err != nil {
		t.Fatal(err)
	}
	// Ask for far more than the ordinary files hold.
	e := New(d, Config{MaxSize: boundFor(d, 4*kb)})
	rep, err := e.Pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(rep); !slices.Equal(got, names(4, 5)) {
		t.Errorf("evicted %v, want only %v", got, names(4, 5))
	}
	for _, id := range []int{1, 2, 3} {
		if !d.has(id) {
			t.Errorf("NAR %d evicted", id)
		}
	}
}

func TestSharedNARCountedOnce(t *testing.T) {
	d := newDiskStore(t)
	d.add(t, tpath{id: 1, size: kb})
	d.add(t, tpath{id: 2, size: kb, narOf: 1}) // a second narinfo, same NAR file
	d.add(t, tpath{id: 3, size: kb})
	st, _ := d.Stats(context.Background())
	if st.NARs != 2 || st.NARBytes != 2*kb {
		t.Fatalf("stats %+v: a shared NAR counted twice", st)
	}
	e := New(d, Config{MaxSize: boundFor(d, kb/2)})
	rep, err := e.Pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Evicted) != 1 || rep.Evicted[0].Bytes != kb || rep.Reasons[0].Bytes != kb {
		t.Errorf("evicted %+v", rep.Evicted)
	}
	st, _ = d.Stats(context.Background())
	if st.NARs != 1 || st.NARBytes != kb {
		t.Errorf("after: %+v", st)
	}
}

func TestKeepLatest(t *testing.T) {
	d := newDiskStore(t)
	// Three variants of an image, first seen a day apart; 4 is in 30's closure.
	d.add(t, tpath{id: 4, size: kb})
	d.add(t, tpath{id: 10, name: "nixos-a.qcow2", size: kb, seen: 0})
	d.add(t, tpath{id: 20, name: "nixos-b.qcow2", size: kb, seen: 24 * time.Hour})
	d.add(t, tpath{id: 30, name: "nixos-c.qcow2", size: kb, seen: 48 * time.Hour, refs: []int{4}})
	d.add(t, tpath{id: 5, name: "other", size: kb})
	rule, err := ParseRule("nixos*.qcow2=2")
	if err != nil {
		t.Fatal(err)
	}
	e := New(d, Config{KeepLatest: []Rule{rule}})
	kept, err := e.Kept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keptPaths []string
	for _, v := range kept {
		keptPaths = append(keptPaths, v.StorePath[len("/nix/store/")+33:])
	}
	if want := []string{"nixos-c.qcow2", "nixos-b.qcow2"}; !slices.Equal(keptPaths, want) {
		t.Errorf("kept %v, want %v", keptPaths, want)
	}
	// Under pressure, the old variant is an ordinary candidate; the kept
	// ones and their closures are not.
	e = New(d, Config{KeepLatest: []Rule{rule}, MaxSize: boundFor(d, 5*kb)})
	rep, err := e.Pass(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(rep); !slices.Equal(got, names(5, 10)) {
		t.Errorf("pressure chose %v, want %v", got, names(5, 10))
	}
	// gc drops the superseded variant even without pressure.
	e = New(d, Config{KeepLatest: []Rule{rule}})
	rep, err = e.Collect(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(rep); !slices.Equal(got, names(10)) || rep.Reasons[2].Files != 1 {
		t.Errorf("gc evicted %v (reasons %+v), want %v for retention", got, rep.Reasons, names(10))
	}
}

func TestParseRule(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Rule
		ok   bool
	}{
		{"nixos*.qcow2=3", Rule{"nixos*.qcow2", 3}, true},
		{"a=b=1", Rule{"a=b", 1}, true},
		{"x", Rule{}, false},
		{"x=0", Rule{}, false},
		{"=2", Rule{}, false},
		{"[=2", Rule{}, false},
	} {
		got, err := ParseRule(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRule(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestReserve(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 4; i++ {
		d.add(t, tpath{id: i, size: kb})
	}
	max := boundFor(d, 0) // exactly at the low watermark now
	e := New(d, Config{MaxSize: max, Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)

	// Larger than the bound allows at all: not kept.
	if _, _, err := e.Reserve(ctx, max); !errors.Is(err, ErrNoRoom) {
		t.Errorf("Reserve(max) = %v, want ErrNoRoom", err)
	}
	// Fits only once something is evicted: the pass runs, then it fits.
	grow, release, err := e.Reserve(ctx, 2*kb)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	st, _ := d.Stats(ctx)
	if total := st.NARBytes + d.IndexSize() + 2*kb; total > max {
		t.Errorf("reserved past the bound: %d > %d", total, max)
	}
	if d.has(1) {
		t.Error("the least recently used NAR was not evicted to make room")
	}
	// While held, the reservation counts.
	u, _ := e.usage(ctx)
	if u.Reserved != 2*kb {
		t.Errorf("reserved %d", u.Reserved)
	}
	// A download larger than reserved holds what landed, and its pass
	// evicts for it without the download waiting.
	passes := func() uint64 { e.passMu.Lock(); defer e.passMu.Unlock(); return e.passes }
	before := passes()
	grow(3 * kb)
	grow(2 * kb) // never shrinks
	if u, _ := e.usage(ctx); u.Reserved != 3*kb {
		t.Errorf("reserved %d after grow(3 KiB), want %d", u.Reserved, 3*kb)
	}
	deadline := time.Now().Add(10 * time.Second)
	for passes() == before || d.has(2) {
		if time.Now().After(deadline) {
			t.Fatal("grow past the bound did not evict")
		}
		time.Sleep(10 * time.Millisecond)
	}
	release(true, nil)
	grow(4 * kb) // after release: nothing
	if u, _ := e.usage(ctx); u.Reserved != 0 {
		t.Errorf("reserved after release %d", u.Reserved)
	}
}

func TestReserveNothingEvictable(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 3; i++ {
		d.add(t, tpath{id: i, size: kb, upload: true})
	}
	max := boundFor(d, 0)
	e := New(d, Config{MaxSize: max, Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	if _, _, err := e.Reserve(ctx, kb); !errors.Is(err, ErrNoRoom) {
		t.Errorf("Reserve with nothing evictable = %v, want ErrNoRoom", err)
	}
	if u, _ := e.usage(ctx); u.Reserved != 0 {
		t.Errorf("a refused reservation still counts: %d", u.Reserved)
	}
}

// TestKeepLatestCountsNewVariantBeforeItsNAR: a new variant is kept from
// the moment its narinfo is asked for, so the room its download reserves
// can come from the variant it supersedes.
func TestKeepLatestCountsNewVariantBeforeItsNAR(t *testing.T) {
	d := newDiskStore(t)
	d.add(t, tpath{id: 10, name: "img-a", size: kb, seen: 0})
	d.add(t, tpath{id: 20, name: "img-b", size: kb, seen: time.Hour, noNAR: true})
	e := New(d, Config{KeepLatest: []Rule{{Glob: "img-*", Keep: 1}}, MaxSize: boundFor(d, kb/2)})
	rep, err := e.Pass(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(rep); !slices.Equal(got, names(10)) {
		t.Errorf("chose %v, want the superseded %v", got, names(10))
	}
	if len(rep.Kept) != 1 || rep.Kept[0].Hash != hashOf(20) {
		t.Errorf("kept %+v, want the new variant", rep.Kept)
	}
}

// TestKeepLatestRecompressed: a recompressed NAR has two source rows (the
// original and the zstd file made from it): one variant, whose NAR is the
// zstd file, so keeping 1 keeps it and supersedes only the older path.
func TestKeepLatestRecompressed(t *testing.T) {
	now := time.Now()
	v := newVariants([]Rule{{Glob: "img-*", Keep: 1}})
	old := store.NARSource{Hash: hashOf(1), StorePath: "/nix/store/" + hashOf(1) + "-img-a", Seen: now.Add(-time.Hour)}
	orig := store.NARSource{Hash: hashOf(2), StorePath: "/nix/store/" + hashOf(2) + "-img-b", Seen: now}
	zstd := orig
	zstd.From = narOf(2) + ".xz"
	for _, order := range [][]string{{"orig", "zstd"}, {"zstd", "orig"}} {
		v := newVariants(v.rules)
		v.add(narOf(1)+".xz", old)
		for _, which := range order {
			if which == "orig" {
				v.add(narOf(2)+".xz", orig)
			} else {
				v.add(narOf(2)+".zst", zstd)
			}
		}
		v.decide()
		kept := v.kept()
		if len(kept) != 1 || kept[0].NAR != narOf(2)+".zst" {
			t.Errorf("%v: kept %+v, want the zstd file alone", order, kept)
		}
		if got := v.superseded(); !slices.Equal(got, []string{narOf(1) + ".xz"}) {
			t.Errorf("%v: superseded %v, want the older path's NAR alone", order, got)
		}
	}
}

// failingRows is a store whose index refuses to delete NAR rows.
type failingRows struct{ *diskStore }

func (failingRows) EvictNARs(context.Context, []string) (int64, error) {
	return 0, fmt.Errorf("evict: %w: %w", store.ErrNotEvicted, errors.New("index: read-only"))
}

// A batch whose rows could not be deleted is reported as an error and
// neither listed nor counted as evicted: its NARs are still served.
func TestPassBatchNotEvicted(t *testing.T) {
	d := newDiskStore(t)
	for i := 1; i <= 3; i++ {
		d.add(t, tpath{id: i, size: kb})
	}
	m := metrics.Discard()
	e := New(failingRows{d}, Config{MaxSize: boundFor(d, kb/2), Metrics: m})
	rep, err := e.Pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "read-only") {
		t.Errorf("errors %q, want the batch's", rep.Errors)
	}
	if got := evictedNames(rep); len(got) != 0 {
		t.Errorf("reported evicted %v", got)
	}
	if got := testutil.ToFloat64(m.Evictions.WithLabelValues(ReasonSize)); got != 0 {
		t.Errorf("evictions_total{size} %v, want 0", got)
	}
	if !d.has(1) {
		t.Error("NAR 1 gone")
	}
}
