package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// warmKey is the config file's list of [[warm]] tables: flakes the server
// follows. It has no flag or environment variable (a list of tables has
// no one-line form).
const warmKey = "warm"

// warmTable is one [[warm]] table as written.
type warmTable struct {
	Flake     string   `toml:"flake"`
	Attrs     []string `toml:"attrs"`
	Keep      *int     `toml:"keep"`
	Interval  string   `toml:"interval"`
	Timeout   string   `toml:"timeout"`
	MaxMemory string   `toml:"max-memory"`
}

// minWarmInterval keeps a typo ("10s" for "10m") from running nix
// back to back.
const minWarmInterval = 10 * time.Second

// readWarms reads the [[warm]] tables of the config file at path:
//
//	[[warm]]
//	flake = "github:me/macs"
//	attrs = ["darwinConfigurations.studio.system"]
//	keep = 3          # revisions of each attribute kept pinned
//	interval = "10m"  # how often the lock is read
func readWarms(path string) ([]warm.Watch, error) {
	var doc struct {
		Warm []warmTable `toml:"warm"`
	}
	md, err := toml.DecodeFile(path, &doc)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && k[0] == warmKey {
			return nil, fmt.Errorf("config file %s: [[warm]]: unknown key %q (want flake, attrs, keep, interval, timeout, max-memory)", path, k[len(k)-1])
		}
	}
	var out []warm.Watch
	for i, t := range doc.Warm {
		w, err := t.watch()
		if err != nil {
			return nil, fmt.Errorf("config file %s: [[warm]] number %d: %w", path, i+1, err)
		}
		out = append(out, w)
	}
	return out, nil
}

func (t warmTable) watch() (warm.Watch, error) {
	w := warm.Watch{Flake: t.Flake, Attrs: t.Attrs, Keep: 3, Interval: 10 * time.Minute, Timeout: defaultWarmTimeout, MaxMemory: defaultWarmMemory}
	switch {
	case t.Flake == "":
		return w, fmt.Errorf("flake: want a flake reference like \"github:me/macs\"")
	case strings.Contains(t.Flake, "#"):
		return w, fmt.Errorf("flake %q: name the attributes in attrs, not after '#'", t.Flake)
	case len(t.Attrs) == 0:
		return w, fmt.Errorf("attrs: want the attributes to warm, e.g. [\"darwinConfigurations.studio.system\"]")
	}
	for _, a := range t.Attrs {
		if a == "" || strings.ContainsAny(a, "# ") {
			return w, fmt.Errorf("attrs: %q is not an attribute path", a)
		}
	}
	if t.Keep != nil {
		if *t.Keep < 1 {
			return w, fmt.Errorf("keep: want 1 or more, got %d", *t.Keep)
		}
		w.Keep = *t.Keep
	}
	if t.Interval != "" {
		d, err := time.ParseDuration(t.Interval)
		if err != nil || d < minWarmInterval {
			return w, fmt.Errorf("interval: want a duration of %s or more like \"10m\", got %q", minWarmInterval, t.Interval)
		}
		w.Interval = d
	}
	if t.Timeout != "" {
		d, err := time.ParseDuration(t.Timeout)
		if err != nil || d < minWarmInterval {
			return w, fmt.Errorf("timeout: want a duration of %s or more like \"10m\", got %q", minWarmInterval, t.Timeout)
		}
		w.Timeout = d
	}
	if t.MaxMemory != "" {
		n, err := parseSize(t.MaxMemory)
		if err != nil {
			return w, fmt.Errorf("max-memory: %w", err)
		}
		w.MaxMemory = offWhenZero(n) // 0: no bound
	}
	return w, nil
}

// The bounds of each nix command a [[warm]] flake runs, unless its table
// says otherwise.
const (
	defaultWarmTimeout = 10 * time.Minute
	defaultWarmMemory  = 8 << 30
)

// writeWarms writes the [[warm]] tables as a config file gives them, after
// the sections check-config prints.
func writeWarms(w io.Writer, warms []warm.Watch) error {
	var b strings.Builder
	for _, wt := range warms {
		mem := "0"
		if wt.MaxMemory > 0 {
			mem = formatSize(wt.MaxMemory)
		}
		fmt.Fprintf(&b, "\n[[warm]]\nflake = %s\nattrs = %s\nkeep = %d\ninterval = %s\ntimeout = %s\nmax-memory = %s\n",
			tomlQuote(wt.Flake), tomlList(wt.Attrs), wt.Keep, tomlQuote(formatDuration(wt.Interval)),
			tomlQuote(formatDuration(wt.Timeout)), tomlQuote(mem))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeWarmReference is docs/configuration.md's part on [[warm]] tables.
func writeWarmReference(w io.Writer) {
	io.WriteString(w, strings.ReplaceAll(warmReference, "‵", "`"))
}

// warmReference is written like referenceIntro.
const warmReference = `
## Followed flakes: ‵[[warm]]‵

A list of tables, in the file only (no flag or environment variable): each names a flake the
server follows. At start and every ‵interval‵ it reads the flake's locked revision (‵nix flake
metadata‵) and, when it is new, evaluates each attribute and pins and prefetches what
substituting it takes, keeping the pins of the ‵keep‵ newest revisions of each
([operations.md](operations.md#following-a-flake-warm-and-coverage)). A reload (SIGHUP) reads them again.

| key | type | default | description |
|---|---|---|---|
| ‵flake‵ | string | required | a flake reference without an attribute: ‵github:me/macs‵, ‵git+ssh://git@host/macs‵, ‵path:/srv/macs‵ |
| ‵attrs‵ | list of strings | required | attributes that evaluate to derivations: ‵darwinConfigurations.studio.system‵ |
| ‵keep‵ | integer | ‵3‵ | revisions of each attribute kept pinned; older ones are unpinned |
| ‵interval‵ | duration | ‵"10m"‵ | how often the lock is read (10s at least) |
| ‵timeout‵ | duration | ‵"10m"‵ | bound on each nix command (locking, evaluating); its process group is killed past it |
| ‵max-memory‵ | size | ‵"8GiB"‵ | bound on each nix command's data segment (‵RLIMIT_DATA‵, Linux only): an evaluation past it fails with nix's out-of-memory error; ‵"0"‵: none |

‵‵‵toml
[[warm]]
flake = "github:me/macs"
attrs = ["darwinConfigurations.studio.system", "packages.aarch64-linux.builder-image"]
keep = 3
interval = "10m"
‵‵‵
`
