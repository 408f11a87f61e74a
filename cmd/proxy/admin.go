package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
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
	Warm(ctx context.Context, req admin.WarmRequest) (admin.WarmResult, error)
	GC(ctx context.Context, req admin.GCRequest) (evict.Report, error)
	Delete(ctx context.Context, req admin.DeleteRequest) (admin.DeleteResult, error)
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
	// local is set by parse when --cache-dir alone was given on the
	// command line: the command works on that dir and asks no server.
	// Otherwise it asks the server, and one that does not answer is an
	// error, unless fallback: --cache-dir was given too, so the user named
	// the dir to use then, and is told it is used. A silent fallback to the
	// configured or default cache dir would answer for another cache than
	// the server's, or fill one the server never sees.
	local, fallback bool
	// creates is set by the commands that write paths into the cache
	// (prefetch, pin): only they may create a --cache-dir that is not
	// there yet.
	creates bool
	stdout  io.Writer
	stderr  io.Writer
}

func newAdminCommand(name string, stdout, stderr io.Writer) *adminCommand {
	c := &adminCommand{name: name, stdout: stdout, stderr: stderr}
	c.fs = newServeFlags(name, &c.cfg)
	c.fs.StringVar(&c.server, "server", "", "`URL` of the running server (default: http:// and the --listen address)")
	c.own = map[string]bool{"server": true}
	c.help = map[string]bool{"server": true, "listen": true, "cache-dir": true}
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
		writeFlags(c.stdout, c.fs, func(name string) bool { return c.help[name] })
		fmt.Fprintf(c.stdout, "\nIt asks the server at --server (default http:// and the --listen address) and\n"+
			"fails when none answers there. With --cache-dir on the command line it works on\n"+
			"that cache dir itself, which no server may be running on: at once, or, when\n"+
			"--server or --listen is given too, if no server answers there (and says so).\n"+
			"It reads every 'serve' flag (--config, --upstream, --admin-token, ...).\n")
		return 0, true
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "nix-cache-proxy %s: %v (see 'nix-cache-proxy %s -h')\n", c.name, err, c.name)
		return 1, true
	}
	c.chooseTarget()
	return 0, false
}

// chooseTarget decides from the command line alone whether the command
// asks a server or works on a cache dir: the config file and environment
// describe the service and are shared with serve, so a cache-dir there is
// the server's, not a request to bypass it.
func (c *adminCommand) chooseTarget() {
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	named := given["server"] || given["listen"]
	c.local = given["cache-dir"] && !named
	c.fallback = given["cache-dir"] && named
	if !c.local && c.server == "" {
		c.server = "http://" + dialable(c.cfg.listen)
	}
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

// backend asks the server (see chooseTarget) or, with --cache-dir, opens
// the cache dir: at once when no server was named, else when the server
// named does not answer. The returned func releases a cache opened here.
func (c *adminCommand) backend(ctx context.Context) (adminBackend, func() error, error) {
	if c.local {
		return c.openLocal()
	}
	client, err := admin.NewClient(c.server, c.cfg.adminToken)
	if err != nil {
		return nil, nil, err
	}
	_, err = client.Jobs(ctx)
	if errors.Is(err, admin.ErrNoServer) && c.fallback {
		fmt.Fprintf(c.stderr, "nix-cache-proxy %s: no server answers at %s; working on --cache-dir %s\n", c.name, c.server, c.cfg.cacheDir)
		return c.openLocal()
	}
	if errors.Is(err, admin.ErrNoServer) {
		return nil, nil, fmt.Errorf("no server answers at %s (connection refused): start it, name the running one with --server URL, "+
			"or pass --cache-dir DIR to work on a cache dir while no server runs on it (the configured one is %s)", c.server, c.cfg.cacheDir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("server %s: %w", c.server, err)
	}
	return client, func() error { return nil }, nil
}

// openLocal opens --cache-dir for the command. Only commands that store
// paths may create it: a read-only command on a dir that is not there
// would otherwise leave an empty cache behind and report on it.
func (c *adminCommand) openLocal() (adminBackend, func() error, error) {
	dir := c.cfg.cacheDir
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && !c.creates {
		return nil, nil, fmt.Errorf("--cache-dir %s: no such directory (no cache there)", dir)
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := openStack(&c.cfg, log)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("--cache-dir %s is held by another process, a running server: pass that server's --server URL instead", dir)
	}
	if err != nil {
		return nil, nil, err
	}
	return s.admin, func() error {
		if err := s.close(); err != nil {
			return fmt.Errorf("close the cache dir %s: %w", dir, err)
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
