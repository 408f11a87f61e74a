package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// adminBackend is what the admin subcommands need: the admin API of a
// running server (*admin.Client) or, when none runs, the same operations on
// the cache dir opened here (*admin.Service).
type adminBackend interface {
	Misses(ctx context.Context, f admin.MissFilter) ([]store.Miss, error)
	Prefetch(ctx context.Context, req admin.PrefetchRequest) (prefetch.Status, error)
	WaitJob(ctx context.Context, id string, wait time.Duration) (prefetch.Status, error)
	Pin(ctx context.Context, paths []string) (prefetch.Status, error)
	Unpin(ctx context.Context, paths []string) error
	Check(ctx context.Context, req admin.CheckRequest) (admin.CheckResult, error)
	Locate(ctx context.Context, req admin.LocateRequest) (admin.LocateResult, error)
	GC(ctx context.Context, req admin.GCRequest) (evict.Report, error)
	Kept(ctx context.Context) ([]evict.Variant, error)
	Verify(ctx context.Context, req verify.Request) (verify.Status, error)
	WaitVerify(ctx context.Context, id string, wait time.Duration, from int) (verify.Status, error)
}

var (
	_ adminBackend = (*admin.Client)(nil)
	_ adminBackend = (*admin.Service)(nil)
)

// adminCommand is the shared part of every admin subcommand: the serve
// configuration (for the cache dir, upstreams and keys when it works
// locally) plus --server.
type adminCommand struct {
	name   string
	cfg    serveConfig
	fs     *flag.FlagSet
	own    map[string]bool
	help   map[string]bool // flags listed in -h: own ones and a few shared
	server string
	// explicitServer is set when --server was given: then a server that
	// does not answer is an error, not a reason to open the cache dir.
	explicitServer bool
	stdout         io.Writer
	stderr         io.Writer
}

func newAdminCommand(name string, stdout, stderr io.Writer) *adminCommand {
	c := &adminCommand{name: name, stdout: stdout, stderr: stderr}
	c.fs = newServeFlags(name, &c.cfg)
	c.fs.StringVar(&c.server, "server", "", "`URL` of the running server (default: http:// and the --listen address)")
	c.own = map[string]bool{"server": true}
	c.help = map[string]bool{"server": true}
	return c
}

// ownFlag marks flags the caller defines after newAdminCommand as the
// command's own (command line only).
func (c *adminCommand) ownFlag(names ...string) {
	for _, n := range names {
		c.own[n], c.help[n] = true, true
	}
}

// parse parses args; it returns an exit code when the command must stop.
func (c *adminCommand) parse(args []string, usage string) (int, bool) {
	err := parseConfig(c.fs, args, os.Getenv, c.own)
	if err == nil {
		err = c.cfg.check()
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(c.stdout, "Usage: nix-cache-proxy %s\n\nFlags of its own:\n", usage)
		c.fs.SetOutput(c.stdout)
		c.fs.VisitAll(func(f *flag.Flag) {
			if c.help[f.Name] {
				name, u := flag.UnquoteUsage(f)
				fmt.Fprintf(c.stdout, "  --%s %s\n    \t%s\n", f.Name, name, u)
			}
		})
		fmt.Fprintf(c.stdout, "\nIt also reads every 'serve' flag (--config, --cache-dir, --upstream, --admin-token, ...)\nto work on the cache dir itself when --server is not given and no server answers at --listen.\n")
		return 0, true
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "nix-cache-proxy %s: %v (see 'nix-cache-proxy %s -h')\n", c.name, err, c.name)
		return 1, true
	}
	c.explicitServer = c.server != ""
	if !c.explicitServer {
		c.server = "http://" + dialable(c.cfg.listen)
	}
	return 0, false
}

// dialable turns a listen address into one a client can dial: a wildcard
// host becomes loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// backend asks the server at --server, or, when --server was not given and
// nothing listens at the --listen address, opens the cache dir. The
// returned func releases a cache opened here.
func (c *adminCommand) backend(ctx context.Context) (adminBackend, func() error, error) {
	client, err := admin.NewClient(c.server, c.cfg.adminToken)
	if err != nil {
		return nil, nil, err
	}
	_, err = client.Jobs(ctx)
	if err == nil {
		return client, func() error { return nil }, nil
	}
	if !errors.Is(err, admin.ErrNoServer) {
		return nil, nil, fmt.Errorf("server %s: %w", c.server, err)
	}
	if c.explicitServer {
		// Reading the cache dir instead would answer for another cache
		// than the one asked about, and silently.
		return nil, nil, fmt.Errorf("--server %s: no server answers there (connection refused); leave out --server to work on --cache-dir when no server runs", c.server)
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := openStack(&c.cfg, log)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("no server answers at %s, and the cache dir %s is held by another process: pass that server's --server URL", c.server, c.cfg.cacheDir)
	}
	if err != nil {
		return nil, nil, err
	}
	return s.admin, func() error {
		if err := s.close(); err != nil {
			return fmt.Errorf("close the cache dir %s: %w", c.cfg.cacheDir, err)
		}
		return nil
	}, nil
}

// withBackend runs fn on the backend (see backend) and returns its exit
// code; an error from either, or from closing a cache dir opened here, is
// printed as one line, exit code 1.
func (c *adminCommand) withBackend(ctx context.Context, fn func(adminBackend) (int, error)) int {
	b, done, err := c.backend(ctx)
	if err != nil {
		return c.fail(err)
	}
	code, err := fn(b)
	if err != nil {
		code = c.fail(err)
	}
	if err := done(); err != nil {
		code = c.fail(err)
	}
	return code
}

// fail prints a one-line error and returns exit code 1.
func (c *adminCommand) fail(err error) int {
	fmt.Fprintf(c.stderr, "nix-cache-proxy %s: %s\n", c.name, strings.TrimPrefix(err.Error(), "admin: "))
	return 1
}
