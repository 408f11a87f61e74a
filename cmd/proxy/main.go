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
  nix-cache-proxy [serve] [flags]   run the cache (the default command)
  nix-cache-proxy help              show this text

Run 'nix-cache-proxy serve -h' for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "nix-cache-proxy: unknown command %q\n%s", cmd, usage)
		return 2
	}
}
