package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthcheckCommand is `nix-cache-proxy healthcheck`: GET /healthz (or
// /readyz with --ready) from the server at --server, exit 0 iff it answers
// 200. A FROM-scratch container has no curl, so its HEALTHCHECK runs this.
func healthcheckCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("healthcheck", stdout, stderr)
	ready := c.fs.Bool("ready", false, "ask /readyz (cache dir usable, enough free disk) instead of /healthz (process answers)")
	timeout := c.fs.Duration("timeout", 5*time.Second, "give up after this long")
	c.ownFlag("ready", "timeout")
	delete(c.help, "cache-dir")
	if code, stop := c.parse(args, "healthcheck [--server URL] [--ready] [--timeout 5s]"); stop {
		return code
	}
	if c.fs.NArg() > 0 {
		return c.fail(fmt.Errorf("unexpected argument %q", c.fs.Arg(0)))
	}
	if c.local {
		return c.fail(fmt.Errorf("healthcheck asks a server (--server or --listen), not a --cache-dir"))
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := strings.TrimSuffix(c.server, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return c.fail(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c.fail(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return c.fail(fmt.Errorf("%s: %s %s", url, resp.Status, msg))
	}
	fmt.Fprintf(stdout, "%s: %s\n", url, msg)
	return 0
}
