package warm

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Target is one FLAKEREF#ATTR: a flake and an attribute that evaluates
// to a derivation (darwinConfigurations.<host>.system, packages.<sys>.x).
type Target struct {
	Flake string `json:"flake"`
	Attr  string `json:"attr"`
}

// ParseTarget reads "FLAKEREF#ATTR".
func ParseTarget(s string) (Target, error) {
	flake, attr, ok := strings.Cut(s, "#")
	if !ok || flake == "" || attr == "" {
		return Target{}, fmt.Errorf("%q: want FLAKEREF#ATTR, e.g. github:me/macs#darwinConfigurations.mac.system", s)
	}
	return Target{Flake: flake, Attr: attr}, nil
}

// String is "FLAKEREF#ATTR".
func (t Target) String() string { return t.Flake + "#" + t.Attr }

// Report is one evaluation of a target and what substituting it takes.
type Report struct {
	Target    Target        `json:"target"`
	Lock      Lock          `json:"lock"`
	Root      string        `json:"root"` // the attribute's .drv
	Evaluated time.Time     `json:"evaluated"`
	Took      time.Duration `json:"took"` // evaluation and walk
	Coverage
}

// Evaluate locks t's flake, evaluates t's attribute at that locked
// revision (so the two agree even if the flake moves meanwhile) and
// walks its closure with locate.
func Evaluate(ctx context.Context, n *Nix, t Target, locate Locator) (Report, error) {
	start := time.Now()
	r := Report{Target: t, Evaluated: start.UTC()}
	var err error
	if r.Lock, err = n.Metadata(ctx, t.Flake); err != nil {
		return r, err
	}
	ref := r.Lock.URL
	if ref == "" {
		ref = t.Flake
	}
	g, err := n.Derivations(ctx, ref+"#"+t.Attr)
	if err != nil {
		return r, err
	}
	r.Root = g.Root
	if r.Coverage, err = Walk(ctx, g, locate); err != nil {
		return r, fmt.Errorf("ask the proxy: %w", err)
	}
	r.Took = time.Since(start)
	return r, nil
}
