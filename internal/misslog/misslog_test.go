package misslog_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cachetest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/misslog"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// env is a real store, miss log and cache asking one fake upstream.
type env struct {
	st    *store.Store
	up    *fakeupstream.Upstream
	log   *misslog.Log
	cache *cache.Cache
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := cachetest.New(t, prefetch.Options{})
	return &env{st: e.Store, up: e.Upstream, log: e.Misses, cache: e.Cache}
}

// rows flushes the miss log and returns its rows by hash.
func (e *env) rows(t *testing.T) map[string]store.Miss {
	t.Helper()
	ctx := context.Background()
	if err := e.log.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	misses, err := e.st.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]store.Miss)
	for _, m := range misses {
		out[m.Hash] = m
	}
	return out
}

// ignoreTimes leaves the wall-clock fields out of a comparison.
var ignoreTimes = cmpopts.IgnoreFields(store.Miss{}, "FirstSeen", "LastSeen")

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the upstream and returns the hash to ask for and
		// the row expected afterwards (Hash is filled in).
		setup   func(u *fakeupstream.Upstream) (string, store.Miss)
		asks    int
		wantErr error
		// upstreamAsks is how often the upstream is asked for the narinfo.
		upstreamAsks int
	}{
		{
			name: "upstream has it",
			setup: func(u *fakeupstream.Upstream) (string, store.Miss) {
				it := u.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), Compression: "none"})
				return it.Hash, store.Miss{StorePath: it.StorePath, Count: 1, Outcome: store.OutcomeFetched, Upstream: u.URL()}
			},
			asks:         1,
			upstreamAsks: 1,
		},
		{
			name: "asked again it is answered from the store and not counted",
			setup: func(u *fakeupstream.Upstream) (string, store.Miss) {
				it := u.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), Compression: "none"})
				return it.Hash, store.Miss{StorePath: it.StorePath, Count: 1, Outcome: store.OutcomeFetched, Upstream: u.URL()}
			},
			asks:         3,
			upstreamAsks: 1,
		},
		{
			name: "no upstream has it; negative-cache hits count too",
			setup: func(u *fakeupstream.Upstream) (string, store.Miss) {
				return fakeupstream.RandomHash(), store.Miss{Count: 3, Outcome: store.OutcomeNotFound}
			},
			asks:         3,
			wantErr:      cache.ErrNotFound,
			upstreamAsks: 1,
		},
		{
			name: "upstream fails",
			setup: func(u *fakeupstream.Upstream) (string, store.Miss) {
				h := fakeupstream.RandomHash()
				u.SetFault("/"+h+".narinfo", fakeupstream.Fault{Status: http.StatusInternalServerError})
				return h, store.Miss{Count: 2, Outcome: store.OutcomeUpstreamError,
					Reason: "narinfo " + h + ": upstream " + u.URL() + ": 500 Internal Server Error"}
			},
			asks:         2,
			wantErr:      upstream.ErrUnavailable,
			upstreamAsks: 6, // an outage is never remembered; each ask is sent 3 times (a 500 is retried)
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			hash, want := tt.setup(e.up)
			want.Hash = hash
			for range tt.asks {
				_, err := e.cache.NarInfo(context.Background(), hash)
				if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
					t.Fatalf("NarInfo: %v, want %v", err, tt.wantErr)
				}
			}
			if n := e.up.Count("/" + hash + ".narinfo"); n != tt.upstreamAsks {
				t.Errorf("upstream asked %d times, want %d", n, tt.upstreamAsks)
			}
			rows := e.rows(t)
			if len(rows) != 1 {
				t.Fatalf("miss log has %d rows, want 1: %v", len(rows), rows)
			}
			got := rows[hash]
			if diff := cmp.Diff(want, got, ignoreTimes); diff != "" {
				t.Errorf("miss row (-want +got):\n%s", diff)
			}
			if got.FirstSeen.IsZero() || got.LastSeen.Before(got.FirstSeen) {
				t.Errorf("FirstSeen %v, LastSeen %v", got.FirstSeen, got.LastSeen)
			}
		})
	}
}

func TestNARDownloadRecordsBytes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	file := fakeupstream.RandomBytes(64 << 10)
	it := e.up.Add(fakeupstream.Path{File: file, Compression: "xz"})
	if _, err := e.cache.NarInfo(ctx, it.Hash); err != nil {
		t.Fatal(err)
	}
	if got := e.rows(t)[it.Hash]; got.Bytes != 0 {
		t.Errorf("Bytes before the NAR download: %d", got.Bytes)
	}
	ent, err := e.cache.LocalEntry(ctx, it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cache.EnsureNAR(ctx, ent.NARName, nil); err != nil {
		t.Fatal(err)
	}
	want := store.Miss{Hash: it.Hash, StorePath: it.StorePath, Count: 1, Outcome: store.OutcomeFetched,
		Upstream: e.up.URL(), Bytes: int64(len(file))}
	if diff := cmp.Diff(want, e.rows(t)[it.Hash], ignoreTimes); diff != "" {
		t.Errorf("miss row after the NAR download (-want +got):\n%s", diff)
	}
}

// TestLookupMakesNoRow: the proxy's own lookups (prefetch, the watcher)
// are not demand. They made rows of count 0, which the status page listed
// among the most frequent misses; now only a client's ask makes a row, and
// a lookup after it updates that row without counting.
func TestLookupMakesNoRow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	it := e.up.Add(fakeupstream.Path{File: []byte("nar"), Compression: "none"})
	if _, err := e.cache.Lookup(ctx, it.Hash); err != nil {
		t.Fatal(err)
	}
	missing := fakeupstream.RandomHash()
	if _, err := e.cache.Lookup(ctx, missing); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Lookup of a missing path: %v", err)
	}
	if rows := e.rows(t); len(rows) != 0 {
		t.Errorf("rows after the proxy's own lookups: %+v, want none", rows)
	}
	asked := e.up.Add(fakeupstream.Path{File: []byte("nar2"), Compression: "none"})
	e.up.SetFault(asked.NarInfoPath, fakeupstream.Fault{Status: http.StatusNotFound})
	if _, err := e.cache.NarInfo(ctx, asked.Hash); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("NarInfo: %v", err)
	}
	e.up.SetFault(asked.NarInfoPath, fakeupstream.Fault{})
	if _, err := e.cache.Lookup(ctx, asked.Hash); err != nil {
		t.Fatal(err)
	}
	want := map[string]store.Miss{
		asked.Hash: {Hash: asked.Hash, StorePath: asked.StorePath, Count: 1, Outcome: store.OutcomeFetched, Upstream: e.up.URL()},
	}
	if diff := cmp.Diff(want, e.rows(t), ignoreTimes); diff != "" {
		t.Errorf("miss rows (-want +got):\n%s", diff)
	}
}

func TestCloseFlushes(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := misslog.New(st, misslog.Options{FlushInterval: time.Hour})
	h := fakeupstream.RandomHash()
	l.Record(store.MissEvent{Hash: h, Asked: true, Outcome: store.OutcomeNotFound})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err := st.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Hash != h || rows[0].Count != 1 || rows[0].LastSeen.IsZero() {
		t.Errorf("after Close: %+v", rows)
	}
}

// TestFlushWaitsForBackgroundFlush checks that what was recorded before
// Flush is in the store when Flush returns, even while the background
// flush runs at the same moment.
func TestFlushWaitsForBackgroundFlush(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := misslog.New(st, misslog.Options{FlushInterval: time.Millisecond})
	defer l.Close()
	for i := range 100 {
		h := fakeupstream.RandomHash()
		l.Record(store.MissEvent{Hash: h, Asked: true, Outcome: store.OutcomeNotFound})
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := st.Misses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !containsHash(rows, h) {
			t.Fatalf("round %d: row recorded before Flush is missing after it", i)
		}
	}
}

func containsHash(rows []store.Miss, h string) bool {
	for _, m := range rows {
		if m.Hash == h {
			return true
		}
	}
	return false
}

func TestMaxPrunes(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := misslog.New(st, misslog.Options{Max: 2, FlushInterval: time.Hour})
	defer l.Close()
	t0 := time.Now().UTC()
	var hashes []string
	for i := range 5 {
		h := fakeupstream.RandomHash()
		hashes = append(hashes, h)
		l.Record(store.MissEvent{Hash: h, At: t0.Add(time.Duration(i) * time.Second), Asked: true, Outcome: store.OutcomeNotFound})
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := st.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range rows {
		got = append(got, m.Hash)
	}
	if diff := cmp.Diff([]string{hashes[4], hashes[3]}, got); diff != "" {
		t.Errorf("rows kept (-want +got):\n%s", diff)
	}
}

// TestMissesIncludesPending: a read right after a miss shows it, although
// the flush that writes it comes up to a second later, and it reads the
// same before and after that flush.
func TestMissesIncludesPending(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := misslog.New(st, misslog.Options{FlushInterval: time.Hour})
	defer l.Close()
	t0 := time.Now().UTC().Truncate(time.Second)
	a, b := fakeupstream.RandomHash(), fakeupstream.RandomHash()
	l.Record(store.MissEvent{Hash: a, At: t0, Asked: true, Outcome: store.OutcomeNotFound})
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l.Record(store.MissEvent{Hash: a, At: t0.Add(time.Second), Asked: true, Outcome: store.OutcomeNotFound})
	l.Record(store.MissEvent{Hash: b, At: t0.Add(2 * time.Second), Asked: true, Outcome: store.OutcomeUpstreamError})
	l.Record(store.MissEvent{Hash: fakeupstream.RandomHash(), At: t0, Outcome: store.OutcomeFetched}) // prefetch: no row
	want := []store.Miss{
		{Hash: b, FirstSeen: t0.Add(2 * time.Second), LastSeen: t0.Add(2 * time.Second), Count: 1, Outcome: store.OutcomeUpstreamError},
		{Hash: a, FirstSeen: t0, LastSeen: t0.Add(time.Second), Count: 2, Outcome: store.OutcomeNotFound},
	}
	before, err := l.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, before); diff != "" {
		t.Errorf("Misses before the flush (-want +got):\n%s", diff)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := l.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, after); diff != "" {
		t.Errorf("Misses after the flush (-want +got):\n%s", diff)
	}
}

// TestPruneInBatches: a full log is not pruned at every flush (that sorted
// every row inside the index's write transaction once a second), but once
// a tenth more than Max have piled up, back to Max; a negative Max prunes
// nothing.
func TestPruneInBatches(t *testing.T) {
	tests := []struct {
		name string
		opts misslog.Options
		asks []int // new paths asked for before each flush
		want []int // rows after each flush
	}{
		{"slack of a tenth", misslog.Options{Max: 10}, []int{10, 1, 1, 1}, []int{10, 11, 10, 11}},
		{"one flush far over", misslog.Options{Max: 10}, []int{25}, []int{10}},
		{"unlimited", misslog.Options{Max: -1}, []int{25, 5}, []int{25, 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			tt.opts.FlushInterval = time.Hour
			l := misslog.New(st, tt.opts)
			defer l.Close()
			at := time.Now().UTC()
			var newest string
			for i, n := range tt.asks {
				for range n {
					at = at.Add(time.Second)
					newest = fakeupstream.RandomHash()
					l.Record(store.MissEvent{Hash: newest, At: at, Asked: true, Outcome: store.OutcomeNotFound})
				}
				if err := l.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				rows, err := st.Misses(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) != tt.want[i] || rows[0].Hash != newest {
					t.Errorf("after flush %d: %d rows, newest %s; want %d, %s", i, len(rows), rows[0].Hash, tt.want[i], newest)
				}
			}
		})
	}
}
