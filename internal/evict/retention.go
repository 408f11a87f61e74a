package evict

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Rule is one --keep-latest GLOB=K: among the cached store paths whose
// name (after "<hash>-") matches Glob, the Keep most recently first seen
// are kept like pins, with their closures.
type Rule struct {
	Glob string
	Keep int
}

// ParseRule reads "GLOB=K", e.g. "nixos*.qcow2=3".
func ParseRule(s string) (Rule, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 {
		return Rule{}, fmt.Errorf("want GLOB=K like 'nixos*.qcow2=3', got %q", s)
	}
	glob, k := s[:i], s[i+1:]
	n, err := strconv.Atoi(k)
	if err != nil || n < 1 {
		return Rule{}, fmt.Errorf("want GLOB=K with K a count of 1 or more, got %q", s)
	}
	if _, err := path.Match(glob, ""); err != nil {
		return Rule{}, fmt.Errorf("glob %q: %w", glob, err)
	}
	return Rule{Glob: glob, Keep: n}, nil
}

// String is the rule as --keep-latest takes it.
func (r Rule) String() string { return r.Glob + "=" + strconv.Itoa(r.Keep) }

// Variant is a store path matched by a --keep-latest rule.
type Variant struct {
	Rule      string    `json:"rule"`
	Hash      string    `json:"hash"`
	StorePath string    `json:"store_path"`
	NAR       string    `json:"nar"`
	Seen      time.Time `json:"first_seen"`
	Kept      bool      `json:"kept"`
}

// variants collects, during a walk, the store paths each rule matches.
type variants struct {
	rules []Rule
	found [][]Variant // per rule
	// at is where each store path hash is in found[rule]: a recompressed
	// NAR has two source rows (the original and the zstd file made from
	// it, NARSource.From), and is still one variant.
	at []map[string]int
}

func newVariants(rules []Rule) *variants {
	at := make([]map[string]int, len(rules))
	for i := range at {
		at[i] = map[string]int{}
	}
	return &variants{rules: rules, found: make([][]Variant, len(rules)), at: at}
}

// match reports whether any rule matches storePath's name.
func (v *variants) match(storePath string) bool {
	name, ok := pathName(storePath)
	if !ok {
		return false
	}
	for _, r := range v.rules {
		if ok, _ := path.Match(r.Glob, name); ok {
			return true
		}
	}
	return false
}

// pathName is a store path's name, after "<hash>-".
func pathName(storePath string) (string, bool) {
	const prefix = len(narinfo.StoreDir) + 1 + 33
	if len(storePath) <= prefix {
		return "", false
	}
	return storePath[prefix:], true
}

func (v *variants) add(nar string, src store.NARSource) error {
	name, _ := pathName(src.StorePath)
	for i, r := range v.rules {
		ok, _ := path.Match(r.Glob, name)
		if !ok {
			continue
		}
		if j, dup := v.at[i][src.Hash]; dup && src.Hash != "" {
			if src.From != "" {
				v.found[i][j].NAR = nar // the zstd file is the entry
			}
			continue
		}
		v.at[i][src.Hash] = len(v.found[i])
		v.found[i] = append(v.found[i], Variant{Rule: r.String(), Hash: src.Hash, StorePath: src.StorePath, NAR: nar, Seen: src.Seen})
	}
	return nil
}

// collect finds every known store path the rules match: every narinfo
// the cache holds, its NAR on disk or not, so the newest variant is kept
// from the moment it is first asked for.
func (v *variants) collect(ctx context.Context, st Store) error {
	if len(v.rules) == 0 {
		return nil
	}
	if err := st.WalkSources(ctx, v.match, v.add); err != nil {
		return fmt.Errorf("walk NAR sources: %w", err)
	}
	v.decide()
	return nil
}

// decide marks the Keep newest of each rule kept.
func (v *variants) decide() {
	for i, r := range v.rules {
		f := v.found[i]
		slices.SortFunc(f, func(a, b Variant) int { return b.Seen.Compare(a.Seen) })
		for j := range f {
			f[j].Kept = j < r.Keep
		}
	}
}

// kept lists the variants kept, newest first per rule.
func (v *variants) kept() []Variant {
	out := []Variant{}
	for _, f := range v.found {
		for _, x := range f {
			if x.Kept {
				out = append(out, x)
			}
		}
	}
	return out
}

// superseded lists the NARs of the variants no rule keeps.
func (v *variants) superseded() []string {
	keep := map[string]bool{}
	for _, x := range v.kept() {
		keep[x.NAR] = true
	}
	var out []string
	for _, f := range v.found {
		for _, x := range f {
			if !x.Kept && !keep[x.NAR] {
				out = append(out, x.NAR)
			}
		}
	}
	return out
}

// left lists the variants no rule keeps, once per store path.
func (v *variants) left() []Variant {
	keep := map[string]bool{}
	for _, x := range v.kept() {
		keep[x.Hash] = true
	}
	var out []Variant
	for _, f := range v.found {
		for _, x := range f {
			if !x.Kept && !keep[x.Hash] {
				keep[x.Hash] = true
				out = append(out, x)
			}
		}
	}
	return out
}

func (v *variants) paths() map[string]string {
	m := map[string]string{}
	for _, f := range v.found {
		for _, x := range f {
			m[x.NAR] = x.StorePath
		}
	}
	return m
}

// protected returns the NAR names that must stay: those of the pinned
// paths and everything in their closures (pins), and those of the kept
// variants and their closures (kept).
func (e *Evictor) protected(ctx context.Context, v *variants) (pins, kept map[string]bool, err error) {
	pinned, err := e.st.Pins(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("pins: %w", err)
	}
	var roots []string
	for _, p := range pinned {
		roots = append(roots, p.Hash)
	}
	if pins, err = closureNARs(ctx, e.st.ReadNarInfo, roots); err != nil {
		return nil, nil, err
	}
	roots = roots[:0]
	for _, x := range v.kept() {
		roots = append(roots, x.Hash)
	}
	kept, err = closureNARs(ctx, e.st.ReadNarInfo, roots)
	return pins, kept, err
}

// Protected returns the NAR names nothing may drop for good: those in the
// closures of the pinned paths and of the variants --keep-latest keeps.
// verify --repair fetches these again instead of leaving them to be
// fetched when asked for.
func (e *Evictor) Protected(ctx context.Context) (map[string]bool, error) {
	v := newVariants(e.cfg.KeepLatest)
	if err := v.collect(ctx, e.st); err != nil {
		return nil, err
	}
	pins, kept, err := e.protected(ctx, v)
	if err != nil {
		return nil, err
	}
	for name := range kept {
		pins[name] = true
	}
	return pins, nil
}

// closureNARs follows References from roots through the narinfos read
// returns and returns the NAR names of every path reached. A path whose
// narinfo is not stored (read says store.ErrNotFound) has nothing on disk
// to keep.
func closureNARs(ctx context.Context, read func(ctx context.Context, hash string) ([]byte, error), roots []string) (map[string]bool, error) {
	nars := map[string]bool{}
	seen := map[string]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		h := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[h] {
			continue
		}
		seen[h] = true
		text, err := read(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("narinfo %s: %w", h, err)
		}
		ni, err := narinfo.Parse(text)
		if err != nil {
			continue // unreadable: it cannot name a file to keep
		}
		if name, ok := strings.CutPrefix(ni.URL, "nar/"); ok {
			nars[name] = true
		}
		for _, ref := range ni.References {
			if len(ref) >= 32 && !seen[ref[:32]] {
				queue = append(queue, ref[:32])
			}
		}
	}
	return nars, nil
}

// keptTTL is how long Kept reuses its answer: it walks the whole index,
// and the status page may be reloaded every few seconds.
const keptTTL = time.Minute

// Kept returns the variants --keep-latest keeps, for the status page and
// misses, as of at most a minute ago.
func (e *Evictor) Kept(ctx context.Context) ([]Variant, error) {
	if len(e.cfg.KeepLatest) == 0 {
		return []Variant{}, nil
	}
	e.keptMu.Lock()
	defer e.keptMu.Unlock()
	if e.kept != nil && time.Since(e.keptAt) < keptTTL {
		return e.kept, nil
	}
	v := newVariants(e.cfg.KeepLatest)
	if err := v.collect(ctx, e.st); err != nil {
		return nil, err
	}
	e.kept, e.keptAt = v.kept(), time.Now()
	return e.kept, nil
}
