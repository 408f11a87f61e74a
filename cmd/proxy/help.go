package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// everydayFlags are the flags `serve --help` shows: what a LAN cache is
// set up with. `serve --help-all` shows the rest, by section.
var everydayFlags = []string{"listen", "cache-dir", "upstream", "trusted-public-key", "max-size", "config"}

// serveHelp writes `serve --help`, or with all `serve --help-all`.
func serveHelp(w io.Writer, fs *flag.FlagSet, all bool) {
	fmt.Fprintf(w, "Usage: nix-cache-proxy [serve] [flags]\n\nRuns the cache. ")
	if !all {
		fmt.Fprintf(w, "The everyday flags:\n\n")
		for _, name := range everydayFlags {
			writeFlag(w, fs.Lookup(name))
		}
		fmt.Fprintf(w, "\nEvery other setting: 'nix-cache-proxy serve --help-all', or docs/configuration.md.\n")
	} else {
		fmt.Fprintf(w, "Every flag, by the section of the config file it is set in:\n")
		section := ""
		for _, k := range fileKeys(new(fileConfig)) {
			if k.section != section {
				section = k.section
				fmt.Fprintf(w, "\n[%s]: %s\n", section, sectionDocs[section])
			}
			writeFlag(w, fs.Lookup(k.flag))
		}
		fmt.Fprintf(w, "\n")
		writeFlag(w, fs.Lookup("config"))
	}
	fmt.Fprintf(w, "\n%s", wrap(fmt.Sprintf("Every flag can also be set by its environment variable, %s<FLAG> (%s), or in the --config file, in its section ([disk] cache-dir).",
		envPrefix, envName("cache-dir")), "", 80))
}

// writeFlag writes one flag for a help text: its name and a placeholder
// for its value, then what it does and its default, if any.
//
//	--max-size SIZE
//	      bound on the cache's size ... (default none)
func writeFlag(w io.Writer, f *flag.Flag) {
	line := "  --" + f.Name
	if p := placeholder(f); p != "" {
		line += " " + p
	}
	_, usage := flag.UnquoteUsage(f)
	if d := defaultText(f); d != "" {
		usage += " (default " + d + ")"
	}
	fmt.Fprintf(w, "%s\n%s", line, wrap(usage, "        ", 80))
}

// wrap breaks text into lines of at most width columns (a longer word
// stands alone), each starting with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

// placeholder names what a flag takes: the word its usage quotes in
// backquotes, upper case ("`address`" is ADDRESS), else one from its type;
// a bool flag takes nothing.
func placeholder(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	if strings.Count(f.Usage, "`") >= 2 {
		name, _ := flag.UnquoteUsage(f)
		return strings.ToUpper(name)
	}
	switch v := f.Value.(type) {
	case sizeFlag:
		return "SIZE"
	case *stringList:
		return "VALUE"
	case flag.Getter:
		switch v.Get().(type) {
		case time.Duration:
			return "DURATION"
		case int, int64, uint, uint64:
			return "N"
		}
	}
	return "VALUE"
}

// defaultText is a flag's default as the user would write it ("1m", not
// "1m0s"), "none" for a size of 0, or "" when there is nothing to say (an
// empty string, false).
func defaultText(f *flag.Flag) string {
	switch f.Value.(type) {
	case sizeFlag:
		if f.DefValue == "0" {
			return "none"
		}
		return f.DefValue
	}
	if d, err := time.ParseDuration(f.DefValue); err == nil && strings.HasSuffix(f.DefValue, "s") {
		return formatDuration(d)
	}
	switch f.DefValue {
	case "", "false", "[]":
		return ""
	}
	return f.DefValue
}

// writeFlags writes the flags of fs named in show (all when nil), in
// fs's order.
func writeFlags(w io.Writer, fs *flag.FlagSet, show func(name string) bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if show == nil || show(f.Name) {
			writeFlag(w, f)
		}
	})
}
