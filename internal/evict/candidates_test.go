package evict

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestByAge checks that byAge hands out every candidate once, oldest
// first, whatever the chunk size, ties and all.
func TestByAge(t *testing.T) {
	for _, tc := range []struct{ n, chunk, spread int }{
		{0, 4, 10}, {1, 4, 10}, {5, 1, 3}, {100, 7, 1000}, {1000, 64, 50}, {4096, 1024, 1 << 30},
	} {
		r := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.chunk)))
		list := make([]candidate, tc.n)
		for i := range list {
			list[i] = candidate{access: int64(r.IntN(tc.spread)), off: i}
		}
		want := slices.Clone(list)
		slices.SortFunc(want, func(a, b candidate) int { return int(a.access - b.access) })
		var got []candidate
		ages := newByAge(list)
		buf := make([]candidate, 0, tc.chunk)
		for {
			if buf = ages.next(buf); len(buf) == 0 {
				break
			}
			got = append(got, buf...)
		}
		if len(got) != len(want) {
			t.Fatalf("n=%d chunk=%d: handed out %d", tc.n, tc.chunk, len(got))
		}
		seen := make([]bool, tc.n)
		for i, c := range got {
			if c.access != want[i].access {
				t.Fatalf("n=%d chunk=%d: #%d has access %d, want %d", tc.n, tc.chunk, i, c.access, want[i].access)
			}
			if seen[c.off] {
				t.Fatalf("n=%d chunk=%d: candidate %d handed out twice", tc.n, tc.chunk, c.off)
			}
			seen[c.off] = true
		}
	}
}
