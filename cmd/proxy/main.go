// Command nix-cache-proxy is a LAN cache for Nix: it serves the Nix HTTP
// binary-cache protocol from local disk and fills itself from upstream caches.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `nix-cache-proxy: a LAN binary cache for Nix.

Usage:
  nix-cache-proxy [serve] [flags]                  run the cache (the default command)
  nix-cache-proxy misses [--since 24h] [--json]    list paths the cache could not serve from disk
  nix-cache-proxy prefetch [--closure] [--misses] PATH...
                                                   bring paths (and closures) into the cache
  nix-cache-proxy pin PATH... / unpin PATH...      keep paths and their closures forever
  nix-cache-proxy check [--closure] [--upstream] PATH...
                                                   exit 0 iff every path is cached (or upstream)
  nix-cache-proxy coverage FLAKEREF#ATTR...         what substituting a flake attribute takes; exit 0 iff nothing must be built
  nix-cache-proxy warm [--keep 3] FLAKEREF#ATTR...  pin and prefetch what a flake attribute needs, keep its newest K revisions
  nix-cache-proxy gc [--dry-run]                   evict now what the disk bound and --keep-latest say, prune the index
  nix-cache-proxy delete [--closure] PATH...        remove paths from the cache, narinfo and NAR (unpin first)
  nix-cache-proxy verify [--repair] [--deep]       check every NAR file and the index; exit 0 iff sound
  nix-cache-proxy keygen NAME                      write a signing key pair (NAME.secret, NAME.public)
  nix-cache-proxy check-config [--config FILE] [flags]
                                                   check a configuration as serve would, print it
  nix-cache-proxy config-reference                 print the reference of every setting (docs/configuration.md)
  nix-cache-proxy relay --cache URL...             on a laptop: forward to the first reachable LAN cache,
                                                   answer at once while none is (docs/relay.md)
  nix-cache-proxy healthcheck [--ready]            exit 0 iff the server's /healthz answers 200
  nix-cache-proxy version                          version, commit and Go version (also --version)
  nix-cache-proxy help                             show this text

PATH is a store path (/nix/store/<hash>-name) or its hash. The admin commands
talk to the running server (--server, default the --listen address) and fail
when none answers there; with --cache-dir on the command line they work on that
cache dir instead (with --server or --listen too: if no server answers there).
'nix-cache-proxy COMMAND -h' for flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "--version" || args[0] != "" && args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "misses":
		return missesCommand(ctx, args, stdout, stderr)
	case "prefetch":
		return prefetchCommand(ctx, args, stdout, stderr)
	case "pin":
		return pinCommand(ctx, args, stdout, stderr)
	case "unpin":
		return unpinCommand(ctx, args, stdout, stderr)
	case "gc":
		return gcCommand(ctx, args, stdout, stderr)
	case "delete":
		return deleteCommand(ctx, args, stdout, stderr)
	case "check":
		return checkCommand(ctx, args, stdout, stderr)
	case "warm":
		return warmCommand(ctx, args, stdout, stderr)
	case "coverage":
		return coverageCommand(ctx, args, stdout, stderr)
	case "verify":
		return verifyCommand(ctx, args, stdout, stderr)
	case "keygen":
		return keygenCommand(args, stdout, stderr)
	case "check-config":
		return checkConfigCommand(args, stdout, stderr)
	case "config-reference":
		return referenceCommand(args, stdout, stderr)
	case "relay":
		return relayCommand(ctx, args, stdout, stderr)
	case "healthcheck":
		return healthcheckCommand(ctx, args, stdout, stderr)
	case "version", "--version":
		return versionCommand(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "nix-cache-proxy: unknown command %q\n%s", cmd, usage)
		return 2
	}
}
