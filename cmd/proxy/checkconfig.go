package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/BurntSushi/toml"
)

// checkConfigCommand is `nix-cache-proxy check-config [flags]`: it loads
// the configuration exactly as serve does (flags, environment, --config
// file, then check) and prints the effective settings as a TOML config
// file, without listening or opening the cache dir. The NixOS module runs it
// on the generated config at build time.
func checkConfigCommand(args []string, stdout, stderr io.Writer) int {
	cfg, fs, err := parseServeConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: nix-cache-proxy check-config [--config FILE] [serve flags]\n\n"+
			"Loads the configuration as 'serve' would (flags, %s* environment, --config file),\n"+
			"checks it, and prints the effective settings as TOML; exit 1 with the error otherwise.\n"+
			"It neither listens nor opens the cache dir.\n", envPrefix)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %v\n", err)
		return 1
	}
	if w := overBoundWarning(cfg); w != "" {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %s\n", w)
	}
	fmt.Fprintf(stdout, "# nix-cache-proxy check-config: the configuration is valid; effective settings:\n")
	if err := writeSettings(stdout, fs); err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %v\n", err)
		return 1
	}
	return 0
}

// writeSettings writes every flag of fs but --config as a key of a TOML
// config file, the admin token redacted: the output is itself a valid
// --config file.
func writeSettings(w io.Writer, fs *flag.FlagSet) error {
	m := map[string]any{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		m[f.Name] = tomlValue(f)
		if f.Name == "admin-token" && f.Value.String() != "" {
			m[f.Name] = "(redacted)"
		}
	})
	return toml.NewEncoder(w).Encode(m)
}

// tomlValue is a flag's value as the config file would give it: lists as
// arrays, numbers and booleans as such, everything else (durations too) as
// the string the flag parses.
func tomlValue(f *flag.Flag) any {
	if l, ok := f.Value.(*stringList); ok {
		return append([]string{}, l.values...)
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch v := g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return v
		}
	}
	return f.Value.String()
}
