package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Derivation is what a closure walk needs of one .drv.
type Derivation struct {
	Path      string              // the .drv's store path
	Name      string              // the derivation's name (its path after the hash, less ".drv")
	Outputs   map[string]string   // output name to store path; none for a floating CA output
	InputDrvs map[string][]string // input .drv path to the outputs used
}

// Graph is a flake attribute's derivation closure.
type Graph struct {
	Root string                 // the attribute's .drv path
	Drvs map[string]*Derivation // by .drv path
}

// RootOutputs are the attribute's own output paths, sorted.
func (g *Graph) RootOutputs() []string {
	var out []string
	for _, p := range g.Drvs[g.Root].Outputs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Derivations evaluates installable (FLAKEREF#ATTR, a derivation) to its
// derivation closure with `nix show-derivation --recursive`. Evaluating
// writes the .drv files to the store, as `nix build --dry-run` does;
// nothing is built.
func (n *Nix) Derivations(ctx context.Context, installable string) (*Graph, error) {
	var g *Graph
	err := n.run(ctx, func(r io.Reader) error {
		var err error
		g, err = parseDerivations(r)
		return err
	}, "show-derivation", "--recursive", installable)
	return g, err
}

// parseDerivations reads show-derivation's JSON object one derivation at
// a time (a system's closure prints tens of MiB, most of it environment
// variables not kept here) and finds the root: the one derivation no
// other takes as an input.
func parseDerivations(r io.Reader) (*Graph, error) {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil {
		return nil, err
	} else if t != json.Delim('{') {
		return nil, fmt.Errorf("want a JSON object of derivations, got %v", t)
	}
	g := &Graph{Drvs: map[string]*Derivation{}}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		path, _ := t.(string)
		var d struct {
			Outputs map[string]struct {
				Path string `json:"path"`
			} `json:"outputs"`
			InputDrvs map[string][]string `json:"inputDrvs"`
			Env       struct {
				Name string `json:"name"`
			} `json:"env"`
		}
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("derivation %s: %w", path, err)
		}
		drv := &Derivation{Path: path, Name: drvName(path), Outputs: map[string]string{}, InputDrvs: d.InputDrvs}
		for name, o := range d.Outputs {
			if o.Path != "" {
				drv.Outputs[name] = o.Path
			}
		}
		g.Drvs[path] = drv
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, d := range g.Drvs {
		for in := range d.InputDrvs {
			used[in] = true
		}
	}
	var roots []string
	for p := range g.Drvs {
		if !used[p] {
			roots = append(roots, p)
		}
	}
	if len(roots) != 1 {
		slices.Sort(roots)
		return nil, fmt.Errorf("want one root derivation, found %d: %s", len(roots), strings.Join(roots, " "))
	}
	g.Root = roots[0]
	return g, nil
}

// drvName is "hello-2.12" for "/nix/store/<hash>-hello-2.12.drv".
func drvName(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if i := strings.IndexByte(base, '-'); i >= 0 {
		base = base[i+1:]
	}
	return strings.TrimSuffix(base, ".drv")
}
