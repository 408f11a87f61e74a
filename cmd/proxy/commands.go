package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

func missesCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("misses", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "print JSON instead of a table")
	since := c.fs.Duration("since", 0, "only paths asked for within this `duration` (e.g. 24h)")
	outcome := c.fs.String("outcome", "", "only this `outcome`: "+strings.Join(store.Outcomes, ", "))
	c.ownFlag("json", "since", "outcome")
	if code, stop := c.parse(args, "misses [--json] [--since 24h] [--outcome not-found]"); stop {
		return code
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		rows, err := b.Misses(ctx, admin.MissFilter{Since: *since, Outcome: *outcome})
		if err != nil {
			return 1, err
		}
		if *asJSON {
			return writeJSON(stdout, rows), nil
		}
		kept, err := b.Kept(ctx)
		if err != nil {
			return 1, err
		}
		printMisses(stdout, rows, kept)
		return 0, nil
	})
}

// printMisses writes the miss log as a table, most recently seen first;
// KEPT marks the variants --keep-latest keeps.
func printMisses(w io.Writer, rows []store.Miss, kept []evict.Variant) {
	keep := map[string]bool{}
	for _, v := range kept {
		keep[v.Hash] = true
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no misses recorded")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST SEEN\tCOUNT\tOUTCOME\tSIZE\tUPSTREAM\tKEPT\tPATH\tREASON")
	now := time.Now()
	for _, m := range rows {
		path := m.StorePath
		if path == "" {
			path = m.Hash
		}
		size := "-"
		if m.Bytes > 0 {
			size = formatBytes(m.Bytes)
		}
		up := m.Upstream
		if up == "" {
			up = "-"
		}
		mark := "-"
		if keep[m.Hash] {
			mark = "kept"
		}
		if m.Attr != "" {
			path += fmt.Sprintf(" (needed by %s at %s)", m.Attr, warm.ShortRev(m.Rev))
		}
		reason := m.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s ago\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", formatAge(now.Sub(m.LastSeen)), m.Count, m.Outcome, size, up, mark, path, reason)
	}
	tw.Flush()
}

func prefetchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("prefetch", stdout, stderr)
	c.creates = true
	closure := c.fs.Bool("closure", false, "also every path in their closures (following References)")
	misses := c.fs.Bool("misses", false, "also every path in the miss log")
	c.ownFlag("closure", "misses")
	if code, stop := c.parse(args, "prefetch [--closure] [--misses] STORE_PATH|HASH..."); stop {
		return code
	}
	if c.fs.NArg() == 0 && !*misses {
		return c.fail(fmt.Errorf("give store paths or hashes, or --misses"))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		st, err := b.Prefetch(ctx, admin.PrefetchRequest{Request: prefetch.Request{Paths: c.fs.Args(), Closure: *closure}, Misses: *misses})
		if err != nil {
			return 1, err
		}
		return c.follow(ctx, b, st), nil
	})
}

func pinCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("pin", stdout, stderr)
	c.creates = true
	if code, stop := c.parse(args, "pin STORE_PATH..."); stop {
		return code
	}
	if c.fs.NArg() == 0 {
		return c.fail(fmt.Errorf("give the store paths to pin"))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		st, err := b.Pin(ctx, c.fs.Args())
		if err != nil {
			return 1, err
		}
		fmt.Fprintf(stderr, "pinned %d path(s); prefetching them with their closures\n", c.fs.NArg())
		return c.follow(ctx, b, st), nil
	})
}

func unpinCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("unpin", stdout, stderr)
	if code, stop := c.parse(args, "unpin STORE_PATH..."); stop {
		return code
	}
	if c.fs.NArg() == 0 {
		return c.fail(fmt.Errorf("give the store paths to unpin"))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		if err := b.Unpin(ctx, c.fs.Args()); err != nil {
			return 1, err
		}
		fmt.Fprintf(stderr, "unpinned %d path(s)\n", c.fs.NArg())
		return 0, nil
	})
}

func checkCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("check", stdout, stderr)
	closure := c.fs.Bool("closure", false, "check every path in their closures too")
	upstream := askUpstreamFlag(c.fs, &c.cfg.upstreams)
	asJSON := c.fs.Bool("json", false, "print JSON")
	c.ownFlag("closure", "json")
	c.help["upstream"] = true
	if code, stop := c.parse(args, "check [--closure] [--upstream] STORE_PATH|HASH..."); stop {
		return code
	}
	if c.fs.NArg() == 0 {
		return c.fail(fmt.Errorf("give the store paths to check"))
	}
	for _, a := range c.fs.Args() {
		if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
			return c.fail(fmt.Errorf("%q is a URL, not a store path: name an upstream with --upstream=URL (a bare --upstream asks the upstreams)", a))
		}
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		res, err := b.Check(ctx, admin.CheckRequest{Paths: c.fs.Args(), Closure: *closure, Upstream: *upstream})
		if err != nil {
			return 1, err
		}
		if *asJSON {
			writeJSON(stdout, res)
		} else {
			printCheck(stdout, res, *upstream)
		}
		if !res.OK {
			return 1, nil
		}
		return 0, nil
	})
}

func printCheck(w io.Writer, res admin.CheckResult, upstream bool) {
	missing := 0
	for _, p := range res.Paths {
		switch {
		case p.Error != "":
			missing++
			fmt.Fprintf(w, "unknown  %s: %s\n", p.Path, p.Error)
		case upstream && !p.NarInfo:
			missing++
			fmt.Fprintf(w, "missing  %s: no upstream has it\n", p.Path)
		case !p.NarInfo:
			missing++
			fmt.Fprintf(w, "missing  %s: narinfo not cached\n", p.Path)
		case !p.NAR:
			missing++
			fmt.Fprintf(w, "missing  %s: NAR not cached\n", p.Path)
		}
	}
	where := "in the local cache"
	if upstream {
		where = "upstream"
	}
	if missing == 0 {
		fmt.Fprintf(w, "all %d path(s) %s\n", len(res.Paths), where)
	} else {
		fmt.Fprintf(w, "%d of %d path(s) not %s\n", missing, len(res.Paths), where)
	}
}

// follow shows a prefetch job's progress until it ends, then its failures;
// exit 0 only when every path is cached.
func (c *adminCommand) follow(ctx context.Context, b adminBackend, st prefetch.Status) int {
	p := newProgress(c.stderr, isTerminal(c.stderr))
	for st.State == prefetch.StateRunning {
		p.update(st)
		next, err := b.WaitJob(ctx, st.ID, 250*time.Millisecond)
		if ctx.Err() != nil {
			p.finish(st)
			fmt.Fprintf(c.stderr, "interrupted; job %s goes on in the server if there is one\n", st.ID)
			return 1
		}
		if err != nil {
			return c.fail(err)
		}
		st = next
	}
	p.finish(st)
	for _, f := range st.Failed {
		fmt.Fprintf(c.stdout, "failed  %s: %s\n", f.Path, f.Error)
	}
	if st.State != prefetch.StateDone {
		return 1
	}
	return 0
}

func writeJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// askUpstreamFlag turns check's --upstream into two flags in one: bare, it
// asks the upstreams instead of the local cache; --upstream=URL still names
// an upstream, as for serve.
func askUpstreamFlag(fs *flag.FlagSet, upstreams *stringList) *bool {
	ask := new(bool)
	f := fs.Lookup("upstream")
	f.Value = &upstreamOrAsk{list: upstreams, ask: ask}
	f.Usage = "bare: ask the upstreams instead of the local cache; =URL: an upstream cache (as for serve), repeatable"
	return ask
}

type upstreamOrAsk struct {
	list *stringList
	ask  *bool
}

func (u *upstreamOrAsk) IsBoolFlag() bool { return true }

func (u *upstreamOrAsk) String() string {
	if u == nil || u.list == nil {
		return ""
	}
	return u.list.String()
}

func (u *upstreamOrAsk) Set(v string) error {
	if v == "true" {
		*u.ask = true
		return nil
	}
	return u.list.Set(v)
}

func (u *upstreamOrAsk) setAll(vs []string) error { return u.list.setAll(vs) }
