package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	hashA = "0123456789abcdfghijklmnpqrsvwxyz"
	hashB = "1123456789abcdfghijklmnpqrsvwxyz"
)

// t0 is an arbitrary fixed instant; events are placed relative to it.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestRecordMissesMerge(t *testing.T) {
	tests := []struct {
		name   string
		events [][]MissEvent // one RecordMisses call per element
		want   Miss
	}{
		{
			name:   "first ask",
			events: [][]MissEvent{{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}}},
			want:   Miss{Hash: hashA, FirstSeen: at(0), LastSeen: at(0), Count: 1, Outcome: OutcomeNotFound},
		},
		{
			name: "repeated asks across flushes count and move LastSeen",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}},
				{{Hash: hashA, At: at(time.Minute), Asked: true, Outcome: OutcomeNotFound},
					{Hash: hashA, At: at(2 * time.Minute), Asked: true, Outcome: OutcomeNotFound}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(0), LastSeen: at(2 * time.Minute), Count: 3, Outcome: OutcomeNotFound},
		},
		{
			name: "an earlier event does not move LastSeen back",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(time.Minute), Asked: true, Outcome: OutcomeNotFound}},
				{{Hash: hashA, At: at(0), Asked: true}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(time.Minute), LastSeen: at(time.Minute), Count: 2, Outcome: OutcomeNotFound},
		},
		{
			name: "the proxy's own lookup neither counts nor refreshes LastSeen",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}},
				{{Hash: hashA, At: at(time.Hour), Outcome: OutcomeFetched, StorePath: "/nix/store/" + hashA + "-x", Upstream: "http://up"}},
			},
			want: Miss{Hash: hashA, StorePath: "/nix/store/" + hashA + "-x", FirstSeen: at(0), LastSeen: at(0),
				Count: 1, Outcome: OutcomeFetched, Upstream: "http://up"},
		},
		{
			// A prefetched path is not a miss: it showed up with count 0
			// among the "most frequent misses".
			name: "the proxy's own lookups and downloads make no row",
			events: [][]MissEvent{{{Hash: hashA, At: at(0), Outcome: OutcomeFetched},
				{Hash: hashA, At: at(time.Second), Outcome: OutcomeFetched, Bytes: 1234}}},
		},
		{
			name: "a download adds bytes and keeps what an empty field does not say",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeFetched, StorePath: "/nix/store/" + hashA + "-x", Upstream: "http://up"}},
				{{Hash: hashA, At: at(time.Second), Outcome: OutcomeFetched, Bytes: 1234}},
			},
			want: Miss{Hash: hashA, StorePath: "/nix/store/" + hashA + "-x", FirstSeen: at(0), LastSeen: at(0),
				Count: 1, Outcome: OutcomeFetched, Upstream: "http://up", Bytes: 1234},
		},
		{
			name: "an upstream error after not-found replaces the outcome",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}},
				{{Hash: hashA, At: at(time.Second), Asked: true, Outcome: OutcomeUpstreamError}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(0), LastSeen: at(time.Second), Count: 2, Outcome: OutcomeUpstreamError},
		},
		{
			name: "a refusal keeps its reason until the next outcome",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeRefusedSignature, Reason: `no valid signature (signed by ["up-1"])`}},
				{{Hash: hashA, At: at(time.Second), Asked: true}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(0), LastSeen: at(time.Second), Count: 2, Outcome: OutcomeRefusedSignature,
				Reason: `no valid signature (signed by ["up-1"])`},
		},
		{
			name: "a fetch after a refusal drops the reason",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeRefusedHash, Reason: "sha256 mismatch"}},
				{{Hash: hashA, At: at(time.Second), Outcome: OutcomeFetched, Bytes: 10}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(0), LastSeen: at(0), Count: 1, Outcome: OutcomeFetched, Bytes: 10},
		},
		{
			name: "a path stored by upload leaves the log",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}},
				{{Hash: hashA, At: at(time.Second), Stored: true}},
			},
		},
		{
			name: "stored in the same flush as the ask, and not brought back by the proxy's own lookup",
			events: [][]MissEvent{{
				{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound},
				{Hash: hashA, At: at(time.Second), Stored: true},
				{Hash: hashA, At: at(2 * time.Second), Outcome: OutcomeFetched, Bytes: 10},
			}},
		},
		{
			name: "asked again after it left (evicted since): a new row",
			events: [][]MissEvent{
				{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}, {Hash: hashA, At: at(time.Second), Stored: true}},
				{{Hash: hashA, At: at(time.Hour), Asked: true, Outcome: OutcomeFetched}},
			},
			want: Miss{Hash: hashA, FirstSeen: at(time.Hour), LastSeen: at(time.Hour), Count: 1, Outcome: OutcomeFetched},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, t.TempDir())
			for _, batch := range tt.events {
				if _, err := s.RecordMisses(ctx, batch); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Misses(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []Miss{}
			if tt.want.Hash != "" {
				want = append(want, tt.want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Misses (-want +got):\n%s", diff)
			}
			// What a reader sees before the flush is what it sees after.
			var all []MissEvent
			for _, batch := range tt.events {
				all = append(all, batch...)
			}
			if diff := cmp.Diff(want, MergeMisses(nil, all), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("MergeMisses (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMissScheduleKeptUntilFound checks that a client asking again about a
// not-found path keeps the watcher's backoff, and that the path being
// fetched ends it.
func TestMissScheduleKeptUntilFound(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	ask := func(d time.Duration, outcome string) {
		t.Helper()
		if _, err := s.RecordMisses(ctx, []MissEvent{{Hash: hashA, At: at(d), Asked: true, Outcome: outcome}}); err != nil {
			t.Fatal(err)
		}
	}
	row := func() Miss {
		t.Helper()
		got, err := s.Misses(ctx)
		if err != nil || len(got) != 1 {
			t.Fatalf("Misses: %v, %v", got, err)
		}
		return got[0]
	}
	ask(0, OutcomeNotFound)
	if err := s.UpdateMiss(ctx, hashA, func(m *Miss) { m.NextCheck, m.CheckInterval = at(4*time.Minute), 4*time.Minute }); err != nil {
		t.Fatal(err)
	}
	ask(time.Minute, OutcomeNotFound)
	if m := row(); !m.NextCheck.Equal(at(4*time.Minute)) || m.CheckInterval != 4*time.Minute {
		t.Errorf("after another not-found ask: NextCheck %v, CheckInterval %v; want the schedule kept", m.NextCheck, m.CheckInterval)
	}
	ask(2*time.Minute, OutcomeFetched)
	if m := row(); !m.NextCheck.IsZero() || m.CheckInterval != 0 {
		t.Errorf("after fetched: NextCheck %v, CheckInterval %v; want no schedule", m.NextCheck, m.CheckInterval)
	}
}

func TestUpdateMiss(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	if err := s.UpdateMiss(ctx, hashA, func(*Miss) { t.Error("fn called for a missing row") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateMiss of a missing row: %v, want ErrNotFound", err)
	}
	if _, err := s.RecordMisses(ctx, []MissEvent{{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateMiss(ctx, hashA, func(m *Miss) { m.CheckInterval = time.Minute }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Miss{{Hash: hashA, FirstSeen: at(0), LastSeen: at(0), Count: 1, Outcome: OutcomeNotFound, CheckInterval: time.Minute}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Misses (-want +got):\n%s", diff)
	}
}

// hashN returns a distinct valid store hash for i < 32*32.
func hashN(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	return fmt.Sprintf("%c%c%s", alphabet[i/32], alphabet[i%32], hashA[2:])
}

func TestPruneMisses(t *testing.T) {
	// ask returns the event of a client asking for path i at minute m.
	ask := func(i, m int) MissEvent {
		return MissEvent{Hash: hashN(i), At: at(time.Duration(m) * time.Minute), Asked: true, Outcome: OutcomeNotFound}
	}
	tests := []struct {
		name    string
		batches [][]MissEvent
		max     int
		want    []string // hashes left, most recently seen first
	}{
		{
			name:    "one batch over max",
			batches: [][]MissEvent{{ask(0, 0), ask(1, 1), ask(2, 2), ask(3, 3), ask(4, 4), ask(5, 5)}},
			max:     3,
			want:    []string{hashN(5), hashN(4), hashN(3)},
		},
		{
			name:    "under max",
			batches: [][]MissEvent{{ask(0, 0), ask(1, 1), ask(2, 2)}},
			max:     5,
			want:    []string{hashN(2), hashN(1), hashN(0)},
		},
		{
			name:    "the batch that crosses max is pruned at once",
			batches: [][]MissEvent{{ask(0, 0), ask(1, 1)}, {ask(2, 2), ask(3, 3)}},
			max:     2,
			want:    []string{hashN(3), hashN(2)},
		},
		{
			name: "a row asked again is recent, whatever its first sight",
			batches: [][]MissEvent{
				{ask(0, 0), ask(1, 1), ask(2, 2)},
				{ask(0, 10), ask(3, 3)},
			},
			max:  3,
			want: []string{hashN(0), hashN(3), hashN(2)},
		},
		{
			name:    "many rows, small max",
			batches: [][]MissEvent{manyAsks(ask, 200)},
			max:     5,
			want:    []string{hashN(199), hashN(198), hashN(197), hashN(196), hashN(195)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, t.TempDir())
			for _, b := range tt.batches {
				if _, err := s.RecordMisses(ctx, b); err != nil {
					t.Fatal(err)
				}
				if _, err := s.PruneMisses(ctx, tt.max); err != nil {
					t.Fatal(err)
				}
			}
			rows, err := s.Misses(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range rows {
				got = append(got, m.Hash)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("hashes left (-want +got):\n%s", diff)
			}
		})
	}
}

func manyAsks(ask func(i, m int) MissEvent, n int) []MissEvent {
	out := make([]MissEvent, n)
	for i := range out {
		out[i] = ask(i, i)
	}
	return out
}

func TestPins(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	full := "/nix/store/" + hashA + "-hello"
	steps := []Pin{
		{Hash: hashA, StorePath: hashA, Since: at(0)},
		{Hash: hashB, StorePath: "/nix/store/" + hashB + "-b", Since: at(time.Minute)},
		// Pinning again keeps the first Since; a full path replaces a bare
		// hash, and a bare hash does not replace a full path.
		{Hash: hashA, StorePath: full, Since: at(2 * time.Minute)},
		{Hash: hashA, StorePath: hashA, Since: at(3 * time.Minute)},
	}
	for _, p := range steps {
		if err := s.PutPin(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Pin{
		{Hash: hashA, StorePath: full, Since: at(0)},
		{Hash: hashB, StorePath: "/nix/store/" + hashB + "-b", Since: at(time.Minute)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Pins (-want +got):\n%s", diff)
	}
	if err := s.DeletePin(ctx, hashA); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePin(ctx, hashA); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeletePin twice: %v, want ErrNotFound", err)
	}
	got, err = s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[1:], got); diff != "" {
		t.Errorf("Pins after unpin (-want +got):\n%s", diff)
	}
}

func TestMissesAndPinsPersist(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	events := []MissEvent{
		{Hash: hashA, At: at(0), Asked: true, Outcome: OutcomeNotFound},
		{Hash: hashB, At: at(time.Minute), Asked: true, Outcome: OutcomeFetched, StorePath: "/nix/store/" + hashB + "-b", Upstream: "http://up"},
		{Hash: hashB, At: at(time.Minute), Outcome: OutcomeFetched, Bytes: 99},
	}
	if _, err := s.RecordMisses(ctx, events); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateMiss(ctx, hashA, func(m *Miss) { m.NextCheck, m.CheckInterval = at(2*time.Minute), 2*time.Minute }); err != nil {
		t.Fatal(err)
	}
	pin := Pin{Hash: hashA, StorePath: "/nix/store/" + hashA + "-a", Since: at(0)}
	if err := s.PutPin(ctx, pin); err != nil {
		t.Fatal(err)
	}
	wantMisses, err := s.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	gotMisses, err := s.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantMisses, gotMisses); diff != "" {
		t.Errorf("Misses after reopen (-before +after):\n%s", diff)
	}
	want := []Miss{
		{Hash: hashB, StorePath: "/nix/store/" + hashB + "-b", FirstSeen: at(time.Minute), LastSeen: at(time.Minute),
			Count: 1, Outcome: OutcomeFetched, Upstream: "http://up", Bytes: 99},
		{Hash: hashA, FirstSeen: at(0), LastSeen: at(0), Count: 1, Outcome: OutcomeNotFound,
			NextCheck: at(2 * time.Minute), CheckInterval: 2 * time.Minute},
	}
	if diff := cmp.Diff(want, gotMisses); diff != "" {
		t.Errorf("Misses after reopen (-want +got):\n%s", diff)
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Pin{pin}, pins); diff != "" {
		t.Errorf("Pins after reopen (-want +got):\n%s", diff)
	}
}
