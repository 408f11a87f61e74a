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

// parseDerivations reads show-derivation's JSON one derivation at a time
// (a system's closure prints tens of MiB, most of it environment variables
// not kept here) and finds the root: the one derivation no other takes as
// an input. It reads the formats Nix has printed: Nix 2.8 to 2.31 (full
// store paths, inputDrvs), 2.32's version 3 (base names), and later ones
// (a {"version", "derivations"} wrapper, inputs.drvs whose values may be
// {"outputs": [...]}, env values that may be objects, which are skipped).
func parseDerivations(r io.Reader) (*Graph, error) {
	dec := json.NewDecoder(r)
	g := &Graph{Drvs: map[string]*Derivation{}}
	if err := readDerivations(dec, g, true); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("more JSON after the derivations")
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

// readDerivations reads one JSON object of derivations by path into g;
// top is true for the outermost object, which may be the wrapper.
func readDerivations(dec *json.Decoder, g *Graph, top bool) error {
	if t, err := dec.Token(); err != nil {
		return err
	} else if t != json.Delim('{') {
		return fmt.Errorf("want a JSON object of derivations, got %v", t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		switch {
		case top && key == "derivations":
			if err := readDerivations(dec, g, false); err != nil {
				return err
			}
		case strings.HasSuffix(key, ".drv"):
			d, err := readDerivation(dec, FullPath(key))
			if err != nil {
				return fmt.Errorf("derivation %s: %w", key, err)
			}
			g.Drvs[d.Path] = d
		default: // the wrapper's "version"
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// drvJSON is what is read of one derivation, in every format.
type drvJSON struct {
	Name    string `json:"name"` // version 3 on; before, env.name
	Outputs map[string]struct {
		Path string `json:"path"`
	} `json:"outputs"`
	InputDrvs map[string]inputOutputs `json:"inputDrvs"` // to version 3
	Inputs    struct {
		Drvs map[string]inputOutputs `json:"drvs"`
	} `json:"inputs"` // version 4 on
	Env struct {
		Name json.RawMessage `json:"name"` // a string, or from version 5 maybe an object
	} `json:"env"`
}

// inputOutputs are the outputs taken of an input derivation: ["out"], or
// from version 4 on maybe {"outputs": ["out"], "dynamicOutputs": {}}.
type inputOutputs []string

func (o *inputOutputs) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err == nil {
		*o = names
		return nil
	}
	var obj struct {
		Outputs []string `json:"outputs"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	*o = obj.Outputs
	return nil
}

func readDerivation(dec *json.Decoder, path string) (*Derivation, error) {
	var d drvJSON
	if err := dec.Decode(&d); err != nil {
		return nil, err
	}
	drv := &Derivation{Path: path, Name: d.Name, Outputs: map[string]string{}, InputDrvs: map[string][]string{}}
	if drv.Name == "" {
		json.Unmarshal(d.Env.Name, &drv.Name)
	}
	if drv.Name == "" {
		drv.Name = drvName(path)
	}
	for name, o := range d.Outputs {
		if o.Path != "" {
			drv.Outputs[name] = FullPath(o.Path)
		}
	}
	for _, inputs := range []map[string]inputOutputs{d.InputDrvs, d.Inputs.Drvs} {
		for in, outs := range inputs {
			drv.InputDrvs[FullPath(in)] = outs
		}
	}
	return drv, nil
}

// drvName is "hello-2.12" for "/nix/store/<hash>-hello-2.12.drv".
func drvName(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if i := strings.IndexByte(base, '-'); i >= 0 {
		base = base[i+1:]
	}
	return strings.TrimSuffix(base, ".drv")
}
