package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
)

func gcCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("gc", stdout, stderr)
	dryRun := c.fs.Bool("dry-run", false, "print what would be evicted, evict nothing")
	asJSON := c.fs.Bool("json", false, "print JSON")
	c.ownFlag("dry-run", "json")
	c.help["max-size"], c.help["min-free"], c.help["keep-latest"] = true, true, true
	if code, stop := c.parse(args, "gc [--dry-run] [--json]"); stop {
		return code
	}
	if c.fs.NArg() > 0 {
		return c.fail(fmt.Errorf("gc takes no arguments, got %q", c.fs.Arg(0)))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		rep, err := b.GC(ctx, admin.GCRequest{DryRun: *dryRun})
		if err != nil {
			return 1, err
		}
		if *asJSON {
			if code := writeJSON(stdout, rep); code != 0 || rep.Held != nil {
				return 1, nil
			}
			return 0, nil
		}
		printGC(stdout, rep)
		if len(rep.Errors) > 0 || rep.Held != nil {
			return 1, nil
		}
		return 0, nil
	})
}

// printGC writes each NAR evicted, the kept variants, and the totals per
// reason.
func printGC(w io.Writer, rep evict.Report) {
	verb := "evicted"
	if rep.DryRun {
		verb = "would evict"
	}
	for _, e := range rep.Evicted {
		what := e.StorePath
		if what == "" {
			what = "nar/" + e.NAR
		}
		if e.Removed {
			del := "deleted"
			if rep.DryRun {
				del = "would delete"
			}
			fmt.Fprintf(w, "%s  %s  %s  (%s; uploaded, so narinfo and NAR go: nothing can fetch it again)\n", del, what, formatBytes(e.Bytes), e.Reason)
			continue
		}
		fmt.Fprintf(w, "%s  %s  %s  (%s, last served %s)\n", verb, what, formatBytes(e.Bytes), e.Reason, e.Access.Format("2006-01-02 15:04"))
	}
	for _, v := range rep.Kept {
		fmt.Fprintf(w, "kept  %s  (--keep-latest %s)\n", v.StorePath, v.Rule)
	}
	for _, msg := range rep.Errors {
		fmt.Fprintf(w, "error  %s\n", msg)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REASON\tFILES\tBYTES")
	var files int
	var bytes int64
	for _, r := range rep.Reasons {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Reason, r.Files, formatBytes(r.Bytes))
		files += r.Files
		bytes += r.Bytes
	}
	fmt.Fprintf(tw, "total\t%d\t%s\n", files, formatBytes(bytes))
	tw.Flush()
	u := rep.Before
	bound := "no --max-size"
	if u.MaxSize > 0 {
		bound = "--max-size " + formatBytes(u.MaxSize)
	}
	free := "unknown"
	if u.Free >= 0 {
		free = formatBytes(u.Free)
	}
	printPrune(w, rep.Prune)
	printHeld(w, rep.Held)
	fmt.Fprintf(w, "before: %s of NARs, %s of index, %s free (%s, --min-free %s); took %s\n",
		formatBytes(u.NARBytes), formatBytes(u.Index), free, bound, formatBytes(u.MinFree), rep.Took)
}

// printPrune writes gc's round of pruning the index as its own line:
// narinfos (with their origin records) pruned or prunable, the bytes of
// their rows, and the stale ones left for later rounds.
func printPrune(w io.Writer, p *evict.PruneReport) {
	switch {
	case p == nil:
		return
	case p.Off:
		fmt.Fprintln(w, "index: never pruned (--prune-after 0)")
		return
	}
	verb := "pruned"
	if p.DryRun {
		verb = "would prune"
	}
	fmt.Fprintf(w, "index: %s %d narinfos with their origin records, %s of rows (%d stale in this round, %d needed by narinfos that stay",
		verb, p.Pruned, formatBytes(p.Bytes), p.Stale, p.Needed)
	if p.Backlog > 0 {
		fmt.Fprintf(w, "; %d more stale for the next rounds", p.Backlog)
	}
	if p.Stopped {
		fmt.Fprint(w, "; stopped at one served meanwhile")
	}
	fmt.Fprintf(w, "); took %s\n", p.Took)
}

// printHeld says, when gc could not reach the bound, what holds the space.
func printHeld(w io.Writer, h *evict.Held) {
	if h == nil {
		return
	}
	fmt.Fprintf(w, "cannot reach the bound: %s short; held by pins %s, kept variants (--keep-latest) %s, uploads %s (--evict-uploads lets eviction take them; `delete` removes one), index %s\n",
		formatBytes(h.Short), heldFiles(h.Pinned), heldFiles(h.Kept), heldFiles(h.Uploads), formatBytes(h.Index))
}

func heldFiles(f evict.Files) string {
	return fmt.Sprintf("%s in %d NAR(s)", formatBytes(f.Bytes), f.Files)
}
