package warm

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// outputs maps "name" and "name.output" to the recorded graph's paths.
func outputs(g *Graph) map[string]string {
	m := map[string]string{}
	for _, d := range g.Drvs {
		for o, p := range d.Outputs {
			m[d.Name+"."+o] = p
			if o == "out" {
				m[d.Name] = p
			}
		}
	}
	return m
}

func TestWalk(t *testing.T) {
	g := recordedGraph(t)
	out := outputs(g)
	ref := func(name string) string { return strings.TrimPrefix(out[name], "/nix/store/") }
	for _, tc := range []struct {
		name  string
		where map[string]PathState // by output name; absent: Missing
		want  Coverage
		build []string // names, in order
	}{
		{
			name: "root cached with its runtime closure",
			where: map[string]PathState{
				"config-a":   {Where: Cached, References: []string{ref("shared-lib"), ref("split.doc")}},
				"shared-lib": {Where: Cached},
				"split.doc":  {Where: Upstream},
			},
			want: Coverage{Paths: 3, Cached: 2, Upstream: 1},
		},
		{
			name: "root missing: its inputs are fetched",
			where: map[string]PathState{
				"shared-lib": {Where: Upstream},
				"split.doc":  {Where: Cached},
				"build-tool": {Where: Upstream},
			},
			want:  Coverage{Paths: 4, Cached: 1, Upstream: 2, Missing: 1, Fetch: []string{"build-tool", "shared-lib", "split.doc"}, MissingPaths: []string{"config-a"}},
			build: []string{"config-a"},
		},
		{
			name: "nothing anywhere: everything is built",
			// Missing paths in the builds' order.
			want: Coverage{Paths: 4, Missing: 4, MissingPaths: []string{"config-a", "build-tool", "shared-lib", "split.doc"}},
			// The attribute first (largest closure), then by name.
			build: []string{"config-a", "build-tool", "shared-lib", "split"},
		},
		{
			name: "an upstream erred",
			where: map[string]PathState{
				"config-a": {Where: Unknown, Error: "upstream 502"},
			},
			want: Coverage{Paths: 1, Unknown: 1, Errors: []string{"config-a: upstream 502"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			byPath := map[string]PathState{}
			for n, st := range tc.where {
				for i, r := range st.References {
					st.References[i] = FullPath(r)
				}
				byPath[out[n]] = st
			}
			asked := map[string]int{}
			cov, err := Walk(context.Background(), g, func(ctx context.Context, paths []string) ([]PathState, error) {
				res := make([]PathState, len(paths))
				for i, p := range paths {
					asked[p]++
					st, ok := byPath[p]
					if !ok {
						st = PathState{Where: Missing}
					}
					st.Path = p
					res[i] = st
				}
				return res, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for p, n := range asked {
				if n > 1 {
					t.Errorf("%s asked %d times", p, n)
				}
			}
			var names []string
			for _, b := range cov.Build {
				names = append(names, b.Name)
			}
			if d := cmp.Diff(tc.build, names); d != "" {
				t.Errorf("builds (-want +got):\n%s", d)
			}
			// Compare the rest with names for paths.
			name := map[string]string{}
			for n, p := range out {
				if _, dup := name[p]; !dup || strings.Contains(n, ".") {
					name[p] = n
				}
			}
			rename := func(ps []string) []string {
				var o []string
				for _, p := range ps {
					o = append(o, name[p])
				}
				return o
			}
			cov.Fetch, cov.MissingPaths, cov.Build = rename(cov.Fetch), rename(cov.MissingPaths), nil
			cov.Errors = rename(nil)
			if tc.want.Errors != nil {
				cov.Errors = tc.want.Errors // checked below
			}
			tc.want.Derivations, tc.want.Roots = 4, g.RootOutputs()
			fixName := func(ps []string) []string {
				var o []string
				for _, p := range ps {
					o = append(o, strings.TrimSuffix(p, ".out"))
				}
				return o
			}
			cov.Fetch, cov.MissingPaths = fixName(cov.Fetch), fixName(cov.MissingPaths)
			slices.Sort(cov.Fetch)
			if d := cmp.Diff(tc.want, cov); d != "" {
				t.Errorf("coverage (-want +got):\n%s", d)
			}
			if cov.Complete() != (tc.want.Missing == 0 && tc.want.Unknown == 0) {
				t.Errorf("Complete() = %v", cov.Complete())
			}
		})
	}
}

func TestWalkError(t *testing.T) {
	boom := errors.New("proxy down")
	_, err := Walk(context.Background(), recordedGraph(t), func(context.Context, []string) ([]PathState, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}
