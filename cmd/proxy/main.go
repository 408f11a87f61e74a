// Command nix-cache-proxy is a LAN cache for Nix: it serves the Nix HTTP
// binary-cache protocol from local disk and fills itself from upstream caches.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// command is a subcommand: its name, what --help says of it, and how it
// runs (nil for help, which run handles: help runs the others).
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands are the subcommands, in the order --help lists them.
var commands = []command{
	{"serve", "run the cache (the default command)", serve},
	{"check-config", "check a configuration as serve would, and print it", noCtx(checkConfigCommand)},
	{"misses", "list the paths clients asked for that were not in the cache", missesCommand},
	{"prefetch", "bring store paths (and their closures) into the cache", prefetchCommand},
	{"pin", "keep store paths and their closures forever, prefetched", pinCommand},
	{"unpin", "stop keeping pinned store paths", unpinCommand},
	{"check", "exit 0 iff every path is cached (--upstream: iff an upstream has it)", checkCommand},
	{"coverage", "what substituting a flake attribute takes; exit 0 iff nothing must be built", coverageCommand},
	{"warm", "pin and prefetch what a flake attribute needs, keeping its newest revisions", warmCommand},
	{"gc", "evict now what the disk bound and --keep-latest say, and prune the index", gcCommand},
	{"delete", "remove store paths from the cache, narinfo and NAR", deleteCommand},
	{"verify", "check every NAR file and the index (--repair fixes what it can)", verifyCommand},
	{"keygen", "write a signing key pair (NAME.secret, NAME.public)", noCtx(keygenCommand)},
	{"relay", "on a laptop: forward to the first reachable LAN cache (docs/relay.md)", relayCommand},
	{"healthcheck", "exit 0 iff the server's /healthz (--ready: /readyz) answers 200", healthcheckCommand},
	{"config-reference", "print every setting: docs/configuration.md", noCtx(referenceCommand)},
	{"version", "print the version, the commit and the Go version", noCtx(versionCommand)},
	{"help", "show this text, or with a COMMAND its flags", nil},
}

func noCtx(f func(args []string, stdout, stderr io.Writer) int) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, args []string, stdout, stderr io.Writer) int { return f(args, stdout, stderr) }
}

// usage is `nix-cache-proxy --help`.
func usage() string {
	var b strings.Builder
	b.WriteString("nix-cache-proxy: a LAN binary cache for Nix.\n\nUsage: nix-cache-proxy [COMMAND] [flags] [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-17s %s\n", c.name, c.summary)
	}
	b.WriteString(`
'nix-cache-proxy COMMAND --help' shows a command's flags; 'serve --help-all' every
setting, as does docs/configuration.md. Flags may come before the command too:
'nix-cache-proxy --cache-dir /srv/cache gc' is 'nix-cache-proxy gc --cache-dir /srv/cache'.

PATH is a store path (/nix/store/<hash>-name) or its hash. The admin commands
talk to the running server (--server, default the --listen address) and fail
when none answers there; with --cache-dir on the command line they work on that
cache dir instead (with --server or --listen too: if no server answers there).
`)
	return b.String()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			return helpCommand(ctx, args[1:], stdout, stderr)
		case "--version", "-version":
			return versionCommand(args[1:], stdout, stderr)
		}
	}
	name, args := splitCommand(args)
	if name == "help" {
		return helpCommand(ctx, args, stdout, stderr)
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, args, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "nix-cache-proxy: unknown command %q\n\n%s", name, usage())
	return 2
}

// helpCommand is `nix-cache-proxy help [COMMAND]`.
func helpCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if args[0] == "help" {
		return helpCommand(ctx, nil, stdout, stderr)
	}
	return run(ctx, []string{args[0], "--help"}, stdout, stderr)
}

// splitCommand finds the subcommand in args and returns it with the rest
// of args, flags before it moved after it: `--listen ADDR check PATH` is
// `check --listen ADDR PATH`. A flag before the command may be any of
// serve's (which every admin command reads too) or --server; the first
// argument that is none of them, nor its value, must be the command,
// else the command is serve and every argument is its.
func splitCommand(args []string) (string, []string) {
	fs := newServeFlags("serve", &serveConfig{})
	fs.String("server", "", "")
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			if i == 0 || slices.ContainsFunc(commands, func(c command) bool { return c.name == a }) {
				return a, append(slices.Clone(args[:i]), args[i+1:]...)
			}
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			break // not a flag a command before it may take: serve's to judge
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
			i++ // its value
		}
	}
	return "serve", args
}
