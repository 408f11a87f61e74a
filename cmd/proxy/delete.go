package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
)

func deleteCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("delete", stdout, stderr)
	closure := c.fs.Bool("closure", false, "also delete what the paths reference that nothing else cached needs (no other cached path references it; not pinned, not kept by --keep-latest)")
	c.ownFlag("closure")
	if code, stop := c.parse(args, "delete [--closure] STORE_PATH|HASH..."); stop {
		return code
	}
	if c.fs.NArg() == 0 {
		return c.fail(fmt.Errorf("give the store paths to delete"))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		res, err := b.Delete(ctx, admin.DeleteRequest{Paths: c.fs.Args(), Closure: *closure})
		if err != nil {
			return 1, err
		}
		for _, d := range res.Deleted {
			how := "fetched again from its upstream if asked for"
			if d.Uploaded {
				how = "uploaded: gone for good"
			}
			fmt.Fprintf(stdout, "deleted  %s  %s  (narinfo and %d NAR file(s); %s)\n", d.StorePath, formatBytes(d.Bytes), len(d.NARs), how)
		}
		fmt.Fprintf(stderr, "deleted %d path(s), %s\n", len(res.Deleted), formatBytes(res.Bytes))
		return 0, nil
	})
}
