package main

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestUsage: --help, -h and help list every command, one line each.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
		out := stdout.String()
		for _, c := range commands {
			line := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(c.name) + ` +(\S.*)$`).FindStringSubmatch(out)
			if line == nil || line[1] != c.summary {
				t.Errorf("%v: no line for %s with its summary:\n%s", args, c.name, out)
			}
		}
		if strings.Contains(out, "--listen ADDRESS") {
			t.Errorf("%v shows serve's flags instead of the commands:\n%s", args, out)
		}
	}
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"help", "gc"}, &stdout, new(bytes.Buffer)); code != 0 || !strings.Contains(stdout.String(), "Usage: nix-cache-proxy gc") {
		t.Errorf("help gc: exit %d\n%s", code, stdout.String())
	}
}

// TestServeHelp: serve --help shows the everyday flags and says where the
// rest are; --help-all shows every flag, by section. Placeholders are
// words in capitals, defaults as the user writes them.
func TestServeHelp(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)( [A-Z0-9_:=]+)?$`)
	names := func(out string) []string {
		var n []string
		for _, m := range flagLine.FindAllStringSubmatch(out, -1) {
			n = append(n, m[1])
		}
		return n
	}
	for _, args := range [][]string{{"serve", "--help"}, {"--listen", "0.0.0.0:5575", "--help"}} {
		var stdout bytes.Buffer
		if code := run(context.Background(), args, &stdout, new(bytes.Buffer)); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		out := stdout.String()
		if got := names(out); !slices.Equal(got, everydayFlags) {
			t.Errorf("%v lists %v, want the everyday flags %v:\n%s", args, got, everydayFlags, out)
		}
		for _, want := range []string{"serve --help-all", "docs/configuration.md", "  --max-size SIZE\n", "(default none)", "  --listen ADDRESS\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v lacks %q:\n%s", args, want, out)
			}
		}
	}
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--help-all"}, &stdout, new(bytes.Buffer)); code != 0 {
		t.Fatalf("--help-all: exit %d", code)
	}
	out := stdout.String()
	var all []string
	newServeFlags("serve", &serveConfig{}).VisitAll(func(f *flag.Flag) { all = append(all, f.Name) })
	got := names(out)
	slices.Sort(got)
	if !slices.Equal(got, all) {
		t.Errorf("--help-all lists %v, want every flag %v", got, all)
	}
	for _, bad := range []string{"0B", "1m0s", "1h0m0s", "--priority Priority", "VALUE", "AUTO"} {
		if strings.Contains(out, bad) {
			t.Errorf("--help-all shows %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{"[disk]: ", "  --priority N\n", "  --recompress MODE\n", "  --negative-ttl DURATION\n", "(default 1m)", "  --verify-signatures\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help-all lacks %q:\n%s", want, out)
		}
	}
}

// TestFlagsBeforeCommand: a flag any command reads may come before the
// command; `--listen X check --closure PATH` once ran serve, which knew no
// --closure.
func TestFlagsBeforeCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		cmd  string
		rest []string
	}{
		{[]string{"--listen", "127.0.0.1:1", "check", "--closure", "P"}, "check", []string{"--listen", "127.0.0.1:1", "--closure", "P"}},
		{[]string{"--cache-dir=/c", "--verify-signatures", "gc", "--dry-run"}, "gc", []string{"--cache-dir=/c", "--verify-signatures", "--dry-run"}},
		{[]string{"--server", "http://x", "pin", "P"}, "pin", []string{"--server", "http://x", "P"}},
		{[]string{"check", "--listen", "X", "P"}, "check", []string{"--listen", "X", "P"}},
		{[]string{"--config", "gc"}, "serve", []string{"--config", "gc"}}, // gc is the file's name
		{[]string{"--listen", "X"}, "serve", []string{"--listen", "X"}},
		{[]string{"--bogus", "gc"}, "serve", []string{"--bogus", "gc"}}, // serve says what --bogus is
		{[]string{"--listen", "X", "stray"}, "serve", []string{"--listen", "X", "stray"}},
		{[]string{"bogus", "--listen", "X"}, "bogus", []string{"--listen", "X"}},
		{nil, "serve", nil},
	} {
		cmd, rest := splitCommand(tt.args)
		if cmd != tt.cmd || !slices.Equal(rest, tt.rest) {
			t.Errorf("splitCommand(%q) = %q %q, want %q %q", tt.args, cmd, rest, tt.cmd, tt.rest)
		}
	}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--listen", freeAddr(t), "check", "--closure", "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-x"}, new(bytes.Buffer), &stderr)
	if code == 0 || strings.Contains(stderr.String(), "unknown flag") || !strings.Contains(stderr.String(), "nix-cache-proxy check: no server answers") {
		t.Errorf("exit %d, stderr %q; want check's own answer: no server there", code, stderr.String())
	}
}
