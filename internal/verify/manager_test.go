package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// gatedStore is an empty store whose index check waits for the test and
// then reports one fault, so a pass can be held half-way.
type gatedStore struct {
	gate chan struct{}
}

func (g *gatedStore) Stats(context.Context) (store.Stats, error) { return store.Stats{}, nil }
func (g *gatedStore) CheckIndex(ctx context.Context) ([]error, error) {
	<-g.gate
	return []error{errors.New("page 7: unreachable unfreed")}, nil
}
func (g *gatedStore) NAREntries(ctx context.Context, after string, limit int) ([]store.NAREntry, error) {
	<-g.gate
	return nil, nil
}
func (g *gatedStore) NARIndexed(context.Context, string) (bool, error)   { return false, nil }
func (g *gatedStore) OpenNARFile(string) (store.NARFile, error)          { return nil, fs.ErrNotExist }
func (g *gatedStore) DropNAR(context.Context, string, fs.FileInfo) error { return nil }
func (g *gatedStore) RebuildNAROrder(context.Context) error              { return nil }
func (g *gatedStore) RemoveStray(context.Context, store.Stray) error     { return nil }
func (g *gatedStore) Strays(context.Context, func(string) bool, func(store.Stray) error) error {
	return nil
}

func TestManagerOneAtATimeAndLongPoll(t *testing.T) {
	ctx := context.Background()
	g := &gatedStore{gate: make(chan struct{})}
	m := NewManager(g, Options{})
	defer m.Close()
	first, err := m.Start(Request{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := m.Start(Request{Repair: true}); !errors.Is(err, ErrRunning) || st.ID != first.ID {
		t.Fatalf("second Start while one runs: %s, %v; want ErrRunning naming %s", st.ID, err, first.ID)
	}
	// Nothing new: the long poll runs out.
	began := time.Now()
	st, err := m.Wait(ctx, first.ID, 50*time.Millisecond, 0)
	if err != nil || st.State != StateRunning || len(st.Problems) != 0 || time.Since(began) < 50*time.Millisecond {
		t.Fatalf("Wait with nothing new: %+v, %v after %v", st, err, time.Since(began))
	}
	// A problem ends the poll at once, before the pass ends.
	go func() { g.gate <- struct{}{} }()
	st, err = m.Wait(ctx, first.ID, 10*time.Second, 0)
	if err != nil || len(st.Problems) != 1 || st.Problems[0].Kind != KindIndex || st.State != StateRunning {
		t.Fatalf("Wait after a problem: %+v, %v", st, err)
	}
	// Past that problem, the poll waits for the end.
	close(g.gate)
	st, err = m.Wait(ctx, first.ID, 10*time.Second, 1)
	if err != nil || st.State != StateDone || st.From != 1 || len(st.Problems) != 0 || st.ProblemsTotal != 1 {
		t.Fatalf("Wait from 1: %+v, %v", st, err)
	}
	if st.Sound() {
		t.Error("a pass with an unrepaired index fault is sound")
	}
	if _, err := m.Start(Request{}); err != nil {
		t.Errorf("Start after the first ended: %v", err)
	}
	if _, err := m.Status("nope", 0); !errors.Is(err, ErrNoJob) {
		t.Errorf("Status of an unknown job: %v", err)
	}
	if l := m.List(); len(l) != 2 || l[0].ID != first.ID {
		t.Errorf("List: %+v", l)
	}
}

// derivedStore is an empty store whose index check finds the faults
// given, and which counts the rebuilds asked of it.
type derivedStore struct {
	gatedStore
	faults  []error
	rebuilt int
}

func (d *derivedStore) CheckIndex(context.Context) ([]error, error) { return d.faults, nil }
func (d *derivedStore) RebuildNAROrder(context.Context) error       { d.rebuilt++; return nil }

// TestDerivedRepaired: faults of the rows derived from the NAR rows are
// mended by one rebuild on --repair; bbolt's own faults never are.
func TestDerivedRepaired(t *testing.T) {
	derived := fmt.Errorf("%w: x.nar is missing from the age order", store.ErrDerived)
	pages := errors.New("page 7: unreachable unfreed")
	for _, tc := range []struct {
		name        string
		faults      []error
		repair      bool
		wantRebuilt int
		wantSound   bool
	}{
		{"derived, no repair", []error{derived, derived}, false, 0, false},
		{"derived, repair", []error{derived, derived}, true, 1, true},
		{"derived and pages, repair", []error{pages, derived}, true, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			close(gate)
			d := &derivedStore{gatedStore: gatedStore{gate: gate}, faults: tc.faults}
			m := NewManager(d, Options{})
			defer m.Close()
			st, err := m.Start(Request{Repair: tc.repair})
			if err != nil {
				t.Fatal(err)
			}
			for st.State == StateRunning {
				if st, err = m.Wait(context.Background(), st.ID, time.Second, 0); err != nil {
					t.Fatal(err)
				}
			}
			if d.rebuilt != tc.wantRebuilt || st.Sound() != tc.wantSound || len(st.Problems) != len(tc.faults) {
				t.Fatalf("rebuilt %d times, sound %v, problems %+v; want %d, %v, %d problems", d.rebuilt, st.Sound(), st.Problems, tc.wantRebuilt, tc.wantSound, len(tc.faults))
			}
			for _, p := range st.Problems {
				if isDerived := strings.Contains(p.Detail, "age order"); p.Repaired != (isDerived && tc.repair) {
					t.Errorf("%s: repaired %v", p.Detail, p.Repaired)
				}
			}
		})
	}
}
