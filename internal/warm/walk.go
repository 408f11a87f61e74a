package warm

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// Where a store path comes from, as the proxy answers.
const (
	Cached   = "cached"   // narinfo and NAR are in the cache
	Upstream = "upstream" // an upstream has it: the proxy fetches it on demand
	Missing  = "missing"  // nobody has it: it must be built
	Unknown  = "unknown"  // it could not be asked about (an upstream erred)
)

// PathState is the proxy's answer about one store path.
type PathState struct {
	Path       string   `json:"path"`                 // the store path as asked
	Where      string   `json:"where"`                // Cached, Upstream, Missing or Unknown
	References []string `json:"references,omitempty"` // of a path that is there: full store paths
	Error      string   `json:"error,omitempty"`      // why it is Unknown
}

// Locator answers where each of paths comes from, in order, one answer
// per path.
type Locator func(ctx context.Context, paths []string) ([]PathState, error)

// Build is a derivation a client would have to build.
type Build struct {
	Drv     string   `json:"drv"`
	Name    string   `json:"name"`
	Outputs []string `json:"outputs"`
	// Closure is how many derivations it depends on, itself included
	// (0 when not counted: a walk with very many builds skips it).
	Closure int `json:"closure,omitempty"`
}

// Coverage is what substituting a flake attribute takes, like
// `nix build --dry-run` for the whole LAN.
type Coverage struct {
	Derivations int `json:"derivations"` // in the attribute's derivation closure
	// Paths needed: the outputs a client would fetch or build, and the
	// runtime closures of those it would fetch.
	Paths    int     `json:"paths"`
	Cached   int     `json:"cached"`
	Upstream int     `json:"upstream"`
	Missing  int     `json:"missing"`
	Unknown  int     `json:"unknown"`
	Build    []Build `json:"build"` // what must be built, the largest closure first
	// Roots are the attribute's own outputs; Fetch are the paths a build
	// of a missing one would fetch (the outputs its derivations take).
	// Pinning both with their closures keeps everything a client
	// substitutes.
	Roots []string `json:"roots"`
	Fetch []string `json:"fetch,omitempty"`
	// MissingPaths are the outputs nobody has, in Build's order.
	MissingPaths []string `json:"missing_paths,omitempty"`
	Errors       []string `json:"errors,omitempty"` // a few of the Unknown answers' errors
}

// Complete reports whether every needed path substitutes.
func (c Coverage) Complete() bool { return c.Missing == 0 && c.Unknown == 0 }

// walkBatch is how many paths one Locator call asks about.
const walkBatch = 500

// maxCountedBuilds bounds the builds whose closures are counted for the
// order (each count walks the graph).
const maxCountedBuilds = 300

// Walk asks locate about g's root outputs and follows what a client
// would do: a path that is there is fetched with its runtime closure
// (its references, asked about in turn), one that is not is built, which
// needs its derivation's inputs (asked about in turn). Nothing is asked
// twice; each round is one call per walkBatch paths.
func Walk(ctx context.Context, g *Graph, locate Locator) (Coverage, error) {
	outOf := map[string]*Derivation{}
	for _, d := range g.Drvs {
		for _, p := range d.Outputs {
			outOf[p] = d
		}
	}
	cov := Coverage{Derivations: len(g.Drvs), Roots: g.RootOutputs(), Build: []Build{}}
	type item struct {
		path  string
		input bool // an input of a build, not a reference
	}
	seen := map[string]bool{}
	building := map[string]bool{}
	var next []item
	add := func(p string, input bool) {
		if !seen[p] {
			seen[p] = true
			next = append(next, item{p, input})
		}
	}
	for _, p := range cov.Roots {
		add(p, false)
	}
	for len(next) > 0 {
		round := next
		next = nil
		for start := 0; start < len(round); start += walkBatch {
			part := round[start:min(len(round), start+walkBatch)]
			paths := make([]string, len(part))
			for i, it := range part {
				paths[i] = it.path
			}
			states, err := locate(ctx, paths)
			if err != nil {
				return Coverage{}, err
			}
			for i, st := range states[:min(len(states), len(part))] {
				cov.Paths++
				switch st.Where {
				case Cached, Upstream:
					if st.Where == Cached {
						cov.Cached++
					} else {
						cov.Upstream++
					}
					if part[i].input {
						cov.Fetch = append(cov.Fetch, part[i].path)
					}
					for _, r := range st.References {
						add(r, false)
					}
				case Missing:
					cov.Missing++
					cov.MissingPaths = append(cov.MissingPaths, part[i].path)
					d := outOf[part[i].path]
					if d == nil || building[d.Path] {
						continue
					}
					building[d.Path] = true
					for in, outs := range d.InputDrvs {
						if id := g.Drvs[in]; id != nil {
							for _, o := range outs {
								if p := id.Outputs[o]; p != "" {
									add(p, true)
								}
							}
						}
					}
				default:
					cov.Unknown++
					if len(cov.Errors) < 5 && st.Error != "" {
						cov.Errors = append(cov.Errors, st.Path+": "+st.Error)
					}
				}
			}
		}
	}
	for p := range building {
		d := g.Drvs[p]
		b := Build{Drv: d.Path, Name: d.Name}
		for _, o := range d.Outputs {
			b.Outputs = append(b.Outputs, o)
		}
		slices.Sort(b.Outputs)
		if len(building) <= maxCountedBuilds {
			b.Closure = closureSize(g, p)
		}
		cov.Build = append(cov.Build, b)
	}
	slices.SortFunc(cov.Build, func(a, b Build) int {
		return cmp.Or(cmp.Compare(b.Closure, a.Closure), strings.Compare(a.Name, b.Name), strings.Compare(a.Drv, b.Drv))
	})
	slices.Sort(cov.Fetch)
	cov.MissingPaths = inBuildOrder(cov.MissingPaths, cov.Build)
	return cov, nil
}

// inBuildOrder orders missing the way builds are: the outputs of the
// derivation with the largest closure first (the attribute's own), so a
// caller that keeps only the first few keeps the top of the tree. Paths
// no build makes (a root without a known derivation) go last, sorted.
func inBuildOrder(missing []string, builds []Build) []string {
	left := map[string]bool{}
	for _, p := range missing {
		left[p] = true
	}
	out := make([]string, 0, len(missing))
	for _, b := range builds {
		for _, o := range b.Outputs {
			if left[o] {
				out = append(out, o)
				delete(left, o)
			}
		}
	}
	return append(out, slices.Sorted(maps.Keys(left))...)
}

// closureSize counts the derivations drv depends on, itself included.
func closureSize(g *Graph, drv string) int {
	seen := map[string]bool{drv: true}
	stack := []string{drv}
	for len(stack) > 0 {
		d := g.Drvs[stack[len(stack)-1]]
		stack = stack[:len(stack)-1]
		if d == nil {
			continue
		}
		for in := range d.InputDrvs {
			if !seen[in] {
				seen[in] = true
				stack = append(stack, in)
			}
		}
	}
	return len(seen)
}

// FullPath turns a base name ("<hash>-<name>", as a narinfo's References
// and the derivation formats from version 3 on write them) into a store
// path; a full path stays as it is.
func FullPath(ref string) string {
	if strings.HasPrefix(ref, "/") {
		return ref
	}
	return narinfo.StoreDir + "/" + ref
}
