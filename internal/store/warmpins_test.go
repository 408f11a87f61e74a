package store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestWarmPins: each attribute keeps its newest revisions' pins; a pin
// an older revision alone needed goes, one another attribute or a hand
// still needs stays.
func TestWarmPins(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	path := func(name string) string {
		return "/nix/store/" + strings.Repeat(name[:1], 32) + "-" + name
	}
	paths := func(names ...string) map[string]string {
		m := map[string]string{}
		for _, n := range names {
			m[strings.Repeat(n[:1], 32)] = path(n)
		}
		return m
	}
	pinned := func() []string {
		t.Helper()
		pins, err := s.Pins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range pins {
			out = append(out, p.StorePath[44:])
		}
		slices.Sort(out)
		return out
	}
	// A path pinned by hand first, then needed by a warm.
	if err := s.PutPin(ctx, Pin{Hash: strings.Repeat("m", 32), StorePath: path("manual"), Since: at(0)}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		attr, rev string
		names     []string
		dropped   []string
		pinned    []string
	}{
		{"f#a", "r1", []string{"x1", "y12", "manual"}, nil, []string{"manual", "x1", "y12"}},
		{"f#b", "r1", []string{"z", "b1"}, nil, []string{"b1", "manual", "x1", "y12", "z"}},
		{"f#a", "r2", []string{"y12", "z"}, nil, []string{"b1", "manual", "x1", "y12", "z"}},
		// keep 2: r1 of f#a goes; x1 was r1's alone, manual was pinned by hand.
		{"f#a", "r3", []string{"c3"}, []string{"x1"}, []string{"b1", "c3", "manual", "y12", "z"}},
		// r2 goes: y12 with it; z stays, f#b needs it.
		{"f#a", "r4", []string{"c3"}, []string{"y12"}, []string{"b1", "c3", "manual", "z"}},
		// Warming r3 again makes it the newest; nothing more goes.
		{"f#a", "r3", []string{"c3"}, nil, []string{"b1", "c3", "manual", "z"}},
	}
	for i, st := range steps {
		dropped, err := s.WarmPins(ctx, st.attr, st.rev, paths(st.names...), 2, at(time.Duration(i+1)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range dropped {
			names = append(names, p.StorePath[44:])
		}
		if d := cmp.Diff(st.dropped, names); d != "" {
			t.Errorf("step %d (%s %s): dropped (-want +got):\n%s", i, st.attr, st.rev, d)
		}
		if d := cmp.Diff(st.pinned, pinned()); d != "" {
			t.Errorf("step %d (%s %s): pinned (-want +got):\n%s", i, st.attr, st.rev, d)
		}
	}
	// Pinned by hand after a warm: it outlives the warm's revisions.
	if err := s.PutPin(ctx, Pin{Hash: strings.Repeat("c", 32), StorePath: path("c3"), Since: at(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i, rev := range []string{"r5", "r6"} {
		if _, err := s.WarmPins(ctx, "f#a", rev, paths("d"), 1, at(time.Hour+time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff([]string{"b1", "c3", "d", "manual", "z"}, pinned()); d != "" {
		t.Errorf("after a pin by hand (-want +got):\n%s", d)
	}
}

// TestWarmMisses: a warm that finds nobody has a path records it, with
// the attribute and revision, though no client asked; the proxy's other
// lookups still add no row.
func TestWarmMisses(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	n, err := s.RecordMisses(ctx, []MissEvent{
		{Hash: hashA, At: at(0), Outcome: OutcomeNotFound, StorePath: "/nix/store/" + hashA + "-img", Attr: "f#img", Rev: "r1"},
		{Hash: hashB, At: at(0), Outcome: OutcomeNotFound},
	})
	if err != nil || n != 1 {
		t.Fatalf("RecordMisses: %d created, %v; want 1", n, err)
	}
	rows, err := s.Misses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Miss{{Hash: hashA, StorePath: "/nix/store/" + hashA + "-img", FirstSeen: at(0), LastSeen: at(0), Outcome: OutcomeNotFound, Attr: "f#img", Rev: "r1"}}
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("misses (-want +got):\n%s", d)
	}
	if got := MergeMisses(nil, []MissEvent{{Hash: hashA, At: at(0), Attr: "f#img"}}); len(got) != 1 {
		t.Errorf("MergeMisses of a warm's miss: %d rows, want 1", len(got))
	}
}
