package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// nixFlags are the flags of the commands that run nix here.
type nixFlags struct {
	command string
	timeout time.Duration
}

func addNixFlags(c *adminCommand) *nixFlags {
	n := &nixFlags{}
	c.fs.StringVar(&n.command, "nix", "nix", "the nix `command` that evaluates the flake")
	c.fs.DurationVar(&n.timeout, "eval-timeout", 10*time.Minute, "bound on each nix command (`duration`); it is killed after that")
	c.ownFlag("nix", "eval-timeout")
	return n
}

func (n *nixFlags) nix() *warm.Nix { return &warm.Nix{Command: n.command, Timeout: n.timeout} }

// targets parses the FLAKEREF#ATTR arguments.
func (c *adminCommand) targets() ([]warm.Target, error) {
	if c.fs.NArg() == 0 {
		return nil, fmt.Errorf("give FLAKEREF#ATTR, e.g. github:me/macs#darwinConfigurations.mac.system")
	}
	var ts []warm.Target
	for _, a := range c.fs.Args() {
		t, err := warm.ParseTarget(a)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// locator asks the proxy (or the cache dir) where paths come from.
func locator(b adminBackend) warm.Locator {
	return func(ctx context.Context, paths []string) ([]warm.PathState, error) {
		res, err := b.Locate(ctx, admin.LocateRequest{Paths: paths})
		if err == nil && len(res.Paths) != len(paths) {
			err = fmt.Errorf("asked about %d paths, got %d answers", len(paths), len(res.Paths))
		}
		return res.Paths, err
	}
}

func coverageCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("coverage", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "print JSON")
	nf := addNixFlags(c)
	c.ownFlag("json")
	if code, stop := c.parse(args, "coverage [--json] FLAKEREF#ATTR..."); stop {
		return code
	}
	targets, err := c.targets()
	if err != nil {
		return c.fail(err)
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		code := 0
		var reports []warm.Report
		for _, t := range targets {
			r, err := warm.Evaluate(ctx, nf.nix(), t, locator(b))
			if err != nil {
				fmt.Fprintf(stderr, "nix-cache-proxy coverage: %s: %v\n", t, err)
				code = 1
				continue
			}
			if !r.Complete() {
				code = 1
			}
			reports = append(reports, r)
			if !*asJSON {
				printCoverage(stdout, r)
			}
		}
		if *asJSON {
			writeJSON(stdout, reports)
		}
		return code, nil
	})
}

// maxListed bounds the builds and paths a report lists by name.
const maxListed = 20

// printCoverage writes one attribute's coverage for people.
func printCoverage(w io.Writer, r warm.Report) {
	fmt.Fprintf(w, "%s at %s", r.Target, r.Lock.Short())
	if !r.Lock.LastModified.IsZero() {
		fmt.Fprintf(w, " (%s)", r.Lock.LastModified.Format("2006-01-02 15:04 MST"))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %d derivations; %d paths needed: %d in the cache, %d upstream, %d nobody has", r.Derivations, r.Paths, r.Cached, r.Upstream, r.Missing)
	if r.Unknown > 0 {
		fmt.Fprintf(w, ", %d not known (upstreams erred)", r.Unknown)
	}
	fmt.Fprintln(w)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error  %s\n", e)
	}
	if len(r.Build) == 0 && r.Unknown == 0 {
		fmt.Fprintln(w, "  everything substitutes")
		return
	}
	if len(r.Build) > 0 {
		fmt.Fprintf(w, "  must build %d derivation(s), the largest first:\n", len(r.Build))
	}
	for i, b := range r.Build {
		if i == maxListed {
			fmt.Fprintf(w, "    … and %d more (--json lists them all)\n", len(r.Build)-i)
			break
		}
		fmt.Fprintf(w, "    %-40s %s\n", b.Name, strings.TrimSuffix(b.Drv, ".drv")+".drv")
	}
}
