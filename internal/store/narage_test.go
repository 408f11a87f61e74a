package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestNARsByAge: the walk hands out NAR files least recently used first,
// a file served since the last flush at its new time (before a later file
// the index has at an older time), and stops when told to.
func TestNARsByAge(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	names := []string{"a" + narName[1:], "b" + narName[1:], "c" + narName[1:], "d" + narName[1:]}
	for _, name := range names {
		commitNAR(t, s, name, 10)
	}
	must(t, s.FlushAccess(ctx)) // stored order: a, b, c, d
	serve := func(name string) {
		f, err := s.OpenNAR(ctx, name)
		must(t, err)
		f.Close()
	}
	walk := func(limit int) []string {
		var got []string
		must(t, s.NARsByAge(ctx, func(u *NARUse) (bool, error) {
			got = append(got, string(u.Name[:1]))
			return len(got) < limit, nil
		}))
		return got
	}
	for _, tc := range []struct {
		name  string
		serve []string // served now, in this order
		flush bool
		limit int
		want  []string
	}{
		{"as stored", nil, false, 10, []string{"a", "b", "c", "d"}},
		{"a served, not flushed", []string{"a"}, false, 10, []string{"b", "c", "d", "a"}},
		{"flushed", nil, true, 10, []string{"b", "c", "d", "a"}},
		{"c then b served, not flushed", []string{"c", "b"}, false, 10, []string{"d", "a", "c", "b"}},
		{"stops", nil, false, 2, []string{"d", "a"}},
		{"flushed again", nil, true, 3, []string{"d", "a", "c"}},
	} {
		for _, name := range tc.serve {
			time.Sleep(time.Millisecond) // distinct times
			serve(name + narName[1:])
		}
		if tc.flush {
			must(t, s.FlushAccess(ctx))
		}
		if got := walk(tc.limit); !slices.Equal(got, tc.want) {
			t.Errorf("%s: order %v, want %v", tc.name, got, tc.want)
		}
	}
}
