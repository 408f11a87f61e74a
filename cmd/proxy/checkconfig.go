package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
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
			"checks it, and prints the effective settings as a config file, in sections; exit 1\n"+
			"with the error otherwise. It neither listens nor opens the cache dir. The flags:\n"+
			"'nix-cache-proxy serve --help-all', or docs/configuration.md.\n", envPrefix)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %v\n", err)
		return 1
	}
	if w := overBoundWarning(cfg); w != "" {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %s\n", w)
	}
	fmt.Fprintf(stdout, "# nix-cache-proxy check-config: the configuration is valid; effective settings:\n\n")
	if err := errors.Join(writeSettings(stdout, fs), writeWarms(stdout, cfg.warms)); err != nil {
		fmt.Fprintf(stderr, "nix-cache-proxy check-config: %v\n", err)
		return 1
	}
	return 0
}

// writeSettings writes the settings of fs as a config file, in sections,
// durations and sizes with their units, the admin token redacted: the
// output is itself a valid --config file.
func writeSettings(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	section := ""
	for _, k := range fileKeys(new(fileConfig)) {
		if k.section != section {
			if section != "" {
				b.WriteString("\n")
			}
			section = k.section
			fmt.Fprintf(&b, "[%s]\n", section)
		}
		f := fs.Lookup(k.flag)
		v := settingTOML(f)
		if k.flag == "admin-token" && f.Value.String() != "" {
			v = tomlQuote("(redacted)")
			if fs.Lookup("admin-token-file").Value.String() != "" {
				v = `""` // read from the token file: printed, both would be refused
			}
		}
		fmt.Fprintf(&b, "%s = %s\n", k.key, v)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// settingTOML is a flag's value as the config file gives it: lists as
// arrays, numbers and booleans as such, durations and sizes as strings
// with their units.
func settingTOML(f *flag.Flag) string {
	switch v := f.Value.(type) {
	case *stringList:
		return tomlList(v.values)
	case *upstreamOrAsk:
		return tomlList(v.list.values)
	case sizeFlag:
		return tomlQuote(formatSize(*v.n))
	case flag.Getter:
		switch g := v.Get().(type) {
		case time.Duration:
			return tomlQuote(formatDuration(g))
		case string:
			return tomlQuote(g)
		case int, bool:
			return fmt.Sprint(g)
		}
	}
	panic(fmt.Sprintf("--%s: no TOML form for %T", f.Name, f.Value))
}

func tomlList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = tomlQuote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// tomlQuote writes s as a TOML basic string.
func tomlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
