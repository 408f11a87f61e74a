package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

func warmCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("warm", stdout, stderr)
	c.creates = true // it pins and prefetches, like pin
	keep := c.fs.Int("keep", admin.DefaultKeep, "revisions of each attribute kept pinned (`K`): older ones are unpinned")
	nf := addNixFlags(c)
	c.ownFlag("keep")
	if code, stop := c.parse(args, "warm [--keep 3] FLAKEREF#ATTR..."); stop {
		return code
	}
	targets, err := c.targets()
	if err == nil && *keep < 1 {
		err = fmt.Errorf("--keep: want 1 or more, got %d", *keep)
	}
	if err != nil {
		return c.fail(err)
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		code := 0
		for _, t := range targets {
			r, err := warm.Evaluate(ctx, nf.nix(), t, locator(b))
			if err != nil {
				fmt.Fprintf(stderr, "nix-cache-proxy warm: %s: %v\n", t, err)
				code = 1
				continue
			}
			printCoverage(stdout, r)
			res, err := b.Warm(ctx, warmRequest(r, *keep))
			if err != nil {
				return 1, err
			}
			fmt.Fprintf(stdout, "  pinned %d path(s) for %s", res.Pinned, r.Lock.Short())
			if len(res.Unpinned) > 0 {
				fmt.Fprintf(stdout, "; unpinned %d that only older revisions needed", len(res.Unpinned))
			}
			if res.Missing > 0 {
				fmt.Fprintf(stdout, "; %d missing path(s) watched for in the miss log", res.Missing)
			}
			fmt.Fprintln(stdout)
			if c.follow(ctx, b, res.Job) != 0 && r.Complete() {
				code = 1 // a path that should substitute did not come in
			}
			if !r.Complete() {
				code = 1
			}
		}
		return code, nil
	})
}

// warmRequest is r as the proxy takes it: its lists shortened to what a
// warm uses, so a cold closure's report fits in one request.
func warmRequest(r warm.Report, keep int) admin.WarmRequest {
	r.Build = r.Build[:min(len(r.Build), maxListed)]
	r.MissingPaths = r.MissingPaths[:min(len(r.MissingPaths), admin.MaxWarmMisses)]
	r.Errors = nil
	return admin.WarmRequest{Report: r, Keep: keep}
}
