package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The documentation's snippets are checked here: what a reader copies must
// work. Every fenced block of README.md and docs/*.md names its kind, and
// each kind has its check:
//
//   - sh, console: each nix-cache-proxy command line (and `go run
//     ./cmd/proxy`) parses against the real binary: its subcommand exists,
//     every flag it names is one that subcommand takes, and the values
//     parse (the flags are parsed with -h after them, so nothing runs);
//     the command lines in the text too; an sh block is bash syntax;
//   - toml: check-config accepts it (TestREADMEConfigExamples);
//   - nix: evaluated with the modules (TestREADMEModuleExamples);
//   - nix.conf: Nix 2.8 reads it without a warning (`nix show-config`);
//   - netrc: machine/login/password lines;
//   - text: output shown to the reader, not run.
//
// A block whose info string ends in " example" holds placeholders a reader
// must replace: it is skipped, and the test lists it.

// docFiles are the files whose every block must name a known kind.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	return append([]string{"../README.md"}, files...)
}

// fence is one fenced code block of a Markdown file.
type fence struct {
	file, info, body string
	line             int // of the opening fence
}

func (f fence) String() string { return f.file + ":" + strconv.Itoa(f.line) }

// fences returns the fenced blocks of a Markdown file, indented ones (in
// lists) too, with the indentation of their fence taken off their lines.
func fences(t *testing.T, file string) []fence {
	t.Helper()
	var out []fence
	var cur *fence
	indent := ""
	for i, line := range strings.Split(readFile(t, file), "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if cur == nil {
			if strings.HasPrefix(trimmed, "```") {
				indent = line[:len(line)-len(trimmed)]
				cur = &fence{file: repoPath(file), info: strings.TrimSpace(trimmed[3:]), line: i + 1}
			}
			continue
		}
		if trimmed == "```" {
			out = append(out, *cur)
			cur = nil
			continue
		}
		cur.body += strings.TrimPrefix(line, indent) + "\n"
	}
	if cur != nil {
		t.Fatalf("%s: fence opened at line %d never closes", file, cur.line)
	}
	return out
}

// repoPath names a file of this test (run in deploy/) from the
// repository's root.
func repoPath(file string) string {
	if rest, ok := strings.CutPrefix(file, "../"); ok {
		return rest
	}
	return "deploy/" + file
}

// blocks returns the blocks of kind in files, and logs the skipped examples.
func blocks(t *testing.T, kind string, files ...string) []fence {
	t.Helper()
	var out []fence
	for _, f := range files {
		for _, b := range fences(t, f) {
			switch b.info {
			case kind:
				out = append(out, b)
			case kind + " example":
				t.Logf("skipped: %s block at %s (marked example)", kind, b)
			}
		}
	}
	return out
}

// TestDocsFenceKinds: every block of README.md and docs/*.md says what it
// is, so none escapes its check.
func TestDocsFenceKinds(t *testing.T) {
	known := map[string]bool{"sh": true, "console": true, "toml": true, "nix": true, "nix.conf": true, "netrc": true, "text": true}
	for _, f := range docFiles(t) {
		for _, b := range fences(t, f) {
			if !known[strings.TrimSuffix(b.info, " example")] {
				t.Errorf("%s: a block of kind %q: give it one of sh, console, toml, nix, nix.conf, netrc, text (with \" example\" for placeholders)", b, b.info)
			}
		}
	}
}

// shellCommands returns the simple commands of a shell snippet as words:
// continuation lines joined, comments dropped, split at ; && || and |,
// redirections, sudo and leading VAR=value words dropped. Quotes are
// honoured; nothing is expanded. In a console block only the lines after a
// "$ " prompt are commands.
func shellCommands(body string, console bool) [][]string {
	if console {
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if c, ok := strings.CutPrefix(l, "$ "); ok {
				lines = append(lines, c)
			}
		}
		body = strings.Join(lines, "\n")
	}
	body = strings.ReplaceAll(body, "\\\n", " ")
	var cmds [][]string
	var words []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, word.String())
		}
		word.Reset()
		inWord = false
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
		words = nil
	}
	r := []rune(body)
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(r) && r[j] != c {
				if c == '"' && r[j] == '\\' && j+1 < len(r) {
					j++
				}
				word.WriteRune(r[j])
				j++
			}
			inWord = true
			i = j
		case c == '#' && !inWord:
			for i < len(r) && r[i] != '\n' {
				i++
			}
			endCmd()
		case c == '\n' || c == ';' || c == '|' || c == '&':
			endCmd()
		case c == ' ' || c == '\t':
			endWord()
		default:
			word.WriteRune(c)
			inWord = true
		}
	}
	endCmd()
	for i, w := range cmds {
		cmds[i] = simpleCommand(w)
	}
	return cmds
}

// simpleCommand drops what the shell, not the command, takes: sudo, env
// assignments, exec, redirections and their targets.
func simpleCommand(words []string) []string {
	for len(words) > 0 && (words[0] == "sudo" || words[0] == "exec" || regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0])) {
		words = words[1:]
	}
	var out []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if regexp.MustCompile(`^[0-9]?>>?$|^<$`).MatchString(w) {
			i++
			continue
		}
		if regexp.MustCompile(`^[0-9]?>>?\S`).MatchString(w) {
			continue
		}
		out = append(out, w)
	}
	return out
}

// proxyArgs returns the arguments of a nix-cache-proxy command line, and
// whether it is one: the binary by any path, or `go run ./cmd/proxy`.
func proxyArgs(words []string) ([]string, bool) {
	switch {
	case len(words) > 0 && filepath.Base(words[0]) == "nix-cache-proxy":
		return words[1:], true
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/proxy":
		return words[3:], true
	}
	return nil, false
}

// flagSpec is what `COMMAND -h` says of a command's flags: each name, and
// whether it takes a value (a boolean prints no value name).
type flagSpec map[string]bool

// commandSpec reads the flags of command from its -h (serve's from
// --help-all); a command that
// takes serve's flags too (the admin commands, check-config) gets those.
func commandSpec(t *testing.T, command string, cache map[string]flagSpec) (flagSpec, error) {
	t.Helper()
	if s, ok := cache[command]; ok {
		return s, nil
	}
	help := "-h"
	if command == "serve" {
		help = "--help-all" // -h shows the everyday flags only
	}
	stdout, stderr, code := run(t, nil, command, help)
	if code != 0 || !strings.HasPrefix(stdout, "Usage:") {
		return nil, &cmdError{"nix-cache-proxy " + command + " " + help + ": exit " + strconv.Itoa(code) + ": " + stderr}
	}
	spec := flagSpec{"h": false, "help": false}
	if command == "serve" {
		spec["help-all"] = false
	}
	for _, m := range regexp.MustCompile(`(?m)^  --?([a-z][a-z0-9-]*)(?: (\S+))?\s*$`).FindAllStringSubmatch(stdout, -1) {
		spec[m[1]] = m[2] != ""
	}
	if command != "serve" && (strings.Contains(stdout, "'serve' flag") || strings.Contains(stdout, "serve flags")) {
		serve, err := commandSpec(t, "serve", cache)
		if err != nil {
			return nil, err
		}
		for k, v := range serve {
			if _, ok := spec[k]; !ok {
				spec[k] = v
			}
		}
	}
	cache[command] = spec
	return spec, nil
}

type cmdError struct{ msg string }

func (e *cmdError) Error() string { return e.msg }

// noArgCommands take no flags and are harmless to run as they are.
var noArgCommands = map[string]bool{"version": true, "--version": true, "config-reference": true, "help": true}

// leadingFlags returns how many of args are serve's flags and their values
// before the first other word.
func leadingFlags(t *testing.T, args []string, specs map[string]flagSpec) int {
	t.Helper()
	serve, err := commandSpec(t, "serve", specs)
	if err != nil {
		return 0
	}
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if serve[name] && !hasValue {
			i++
		}
		i++
	}
	return min(i, len(args))
}

// checkCommandLine parses args as the binary would, without running the
// command: the flags up to the first argument that is not one, then -h,
// which stops the parse with the command's help once the flags named
// before it have parsed.
func checkCommandLine(t *testing.T, args []string, specs map[string]flagSpec) error {
	t.Helper()
	command := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") || len(args) > 0 && noArgCommands[args[0]] {
		command, args = args[0], args[1:]
	} else if lead := leadingFlags(t, args, specs); lead < len(args) {
		// Flags every command reads may come before the command:
		// --listen X check --closure P is check --listen X --closure P.
		if _, err := commandSpec(t, args[lead], specs); err == nil && args[lead] != "serve" {
			command = args[lead]
			args = append(append([]string{}, args[:lead]...), args[lead+1:]...)
		}
	}
	if noArgCommands[command] {
		if _, stderr, code := run(t, nil, append([]string{command}, args...)...); code != 0 {
			return &cmdError{"exit " + strconv.Itoa(code) + ": " + stderr}
		}
		return nil
	}
	spec, err := commandSpec(t, command, specs)
	if err != nil {
		return err
	}
	end := len(args)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			end = i
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takes, ok := spec[name]
		if !ok {
			return &cmdError{"nix-cache-proxy " + command + " has no flag --" + name}
		}
		if takes && !hasValue {
			i++
		}
		if i >= len(args) {
			return &cmdError{"--" + name + " lacks its value"}
		}
	}
	for _, a := range args[end:] {
		if strings.HasPrefix(a, "--") && len(a) > 2 {
			name, _, _ := strings.Cut(a[2:], "=")
			if _, ok := spec[name]; !ok {
				return &cmdError{"nix-cache-proxy " + command + " has no flag --" + name}
			}
		}
	}
	parse := append(append([]string{command}, args[:end]...), "-h")
	stdout, stderr, code := run(t, nil, parse...)
	if code != 0 || !strings.HasPrefix(stdout, "Usage:") {
		return &cmdError{"the flags do not parse (exit " + strconv.Itoa(code) + "): " + strings.TrimSpace(stderr)}
	}
	return nil
}

// TestDocsCommands checks every nix-cache-proxy command line of the docs'
// sh and console blocks against the binary (see the top of this file).
func TestDocsCommands(t *testing.T) {
	files := append(docFiles(t), "README.md")
	specs := map[string]flagSpec{}
	n := 0
	for _, kind := range []string{"sh", "console"} {
		for _, b := range blocks(t, kind, files...) {
			for _, words := range shellCommands(b.body, kind == "console") {
				args, ok := proxyArgs(words)
				if !ok {
					continue
				}
				n++
				if err := checkCommandLine(t, args, specs); err != nil {
					t.Errorf("%s: %s: %v", b, strings.Join(words, " "), err)
				}
			}
		}
	}
	// And the command lines in the text: `nix-cache-proxy gc --dry-run`.
	span := regexp.MustCompile("`([^`]+)`")
	for _, f := range files {
		for _, m := range span.FindAllStringSubmatch(regexp.MustCompile("(?s)```.*?```").ReplaceAllString(readFile(t, f), ""), -1) {
			for _, words := range shellCommands(strings.ReplaceAll(m[1], "\n", " "), false) {
				args, ok := proxyArgs(words)
				if !ok {
					continue
				}
				n++
				if err := checkCommandLine(t, args, specs); err != nil {
					t.Errorf("%s: `%s`: %v", repoPath(f), strings.Join(words, " "), err)
				}
			}
		}
	}
	t.Logf("%d nix-cache-proxy command lines checked", n)
	if n < 40 {
		t.Errorf("only %d nix-cache-proxy command lines found in the docs: the patterns are stale", n)
	}
}

// TestDocsShellSyntax: every sh block is a script bash parses (bash -n),
// so no quote or continuation is left open.
func TestDocsShellSyntax(t *testing.T) {
	for _, b := range blocks(t, "sh", append(docFiles(t), "README.md")...) {
		cmd := exec.Command("bash", "-n")
		cmd.Stdin = strings.NewReader(b.body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: bash -n: %v\n%s", b, err, out)
		}
	}
}

// TestDocsCommandCheck shows the command check refuses what it should: an
// unknown subcommand, an unknown flag, a flag of another command, a value
// that does not parse.
func TestDocsCommandCheck(t *testing.T) {
	specs := map[string]flagSpec{}
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"nix-cache-proxy nosuch --x", false},
		{"nix-cache-proxy serve --no-such-flag 1", false},
		{"nix-cache-proxy relay --max-size 10GiB", false},
		{"nix-cache-proxy misses --since soon", false},
		{"nix-cache-proxy gc --dry-run --listen", false},
		{"nix-cache-proxy pin /nix/store/x --no-such-flag", false},
		{"go run ./cmd/proxy --max-size 100", false},
		{"sudo NIX_CACHE_PROXY_X=1 nix-cache-proxy misses --since 24h --outcome not-found 2>/dev/null", true},
		{"./nix-cache-proxy serve --listen 0.0.0.0:5575 --max-size=10GiB", true},
		{"nix-cache-proxy check --closure --upstream /nix/store/0123456789abcdfghijklmnpqrsvwxyz-x", true},
		{"nix-cache-proxy version", true},
		{"nix-cache-proxy --help", true},
		{"nix-cache-proxy serve --help-all", true},
		{"nix-cache-proxy --listen 10.0.0.5:5575 check --closure PATH", true},
		{"nix-cache-proxy --listen 10.0.0.5:5575 misses --nope", false},
	} {
		args, _ := proxyArgs(shellCommands(tc.line, false)[0])
		if err := checkCommandLine(t, args, specs); (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok = %v", tc.line, err, tc.ok)
		}
	}
}

// TestShellCommands checks the snippet splitter on the shapes the docs use.
func TestShellCommands(t *testing.T) {
	got := shellCommands("# a comment\nsudo nix-cache-proxy pin 'a#b' \\\n  --x \"y z\" > out && echo ok # done\n", false)
	want := [][]string{{"nix-cache-proxy", "pin", "a#b", "--x", "y z"}, {"echo", "ok"}}
	if strings.Join(flat(got), "|") != strings.Join(flat(want), "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	got = shellCommands("$ nix-cache-proxy gc\nevicted 3 NARs\n", true)
	if len(got) != 1 || strings.Join(got[0], " ") != "nix-cache-proxy gc" {
		t.Errorf("console: got %q", got)
	}
}

func flat(cmds [][]string) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, strings.Join(c, " "))
	}
	return out
}

// TestDocsNixConf has Nix read every nix.conf snippet of the docs (and of
// deploy/README.md): a setting Nix 2.8 does not know is a warning, and
// fails. Without nix it skips, and fails when CI is set.
func TestDocsNixConf(t *testing.T) {
	bs := blocks(t, "nix.conf", append(docFiles(t), "README.md")...)
	if len(bs) < 3 {
		t.Fatalf("%d nix.conf blocks in the docs: the pattern is stale", len(bs))
	}
	for _, b := range bs {
		t.Run(b.String(), func(t *testing.T) { nixShowConfig(t, b.body) })
	}
}

// TestDocsNetrc: a netrc snippet is machine, login and password.
func TestDocsNetrc(t *testing.T) {
	line := regexp.MustCompile(`^machine \S+( login \S+)? password \S+$`)
	for _, b := range blocks(t, "netrc", append(docFiles(t), "README.md")...) {
		for _, l := range strings.Split(strings.TrimSpace(b.body), "\n") {
			if !line.MatchString(strings.ReplaceAll(l, "<the token>", "TOKEN")) {
				t.Errorf("%s: %q is not a netrc line Nix reads", b, l)
			}
		}
	}
}

// TestDocsLinks: every relative link of README.md, docs/*.md and
// deploy/README.md names a file that exists, and its #anchor a heading
// there.
func TestDocsLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range append(docFiles(t), "README.md", "../BENCHMARKS.md") {
		text := stripCode(readFile(t, f))
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if regexp.MustCompile(`^[a-z]+:`).MatchString(target) {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := f
			if path != "" {
				file = filepath.Join(filepath.Dir(f), path)
			}
			st, err := os.Stat(file)
			if err != nil {
				t.Errorf("%s: link %s: %v", f, target, err)
				continue
			}
			if anchor == "" {
				continue
			}
			if st.IsDir() || !strings.HasSuffix(file, ".md") {
				t.Errorf("%s: link %s: an anchor into a file that is not Markdown", f, target)
				continue
			}
			if !headingSlugs(readFile(t, file))[anchor] {
				t.Errorf("%s: link %s: %s has no heading #%s", f, target, file, anchor)
			}
		}
	}
}

// stripCode drops fenced blocks and code spans, where [x](y) is not a link.
func stripCode(text string) string {
	text = regexp.MustCompile("(?s)```.*?```").ReplaceAllString(text, "")
	return regexp.MustCompile("`[^`\n]*`").ReplaceAllString(text, "")
}

// headingSlugs are the anchors GitHub gives a Markdown file's headings:
// lower case, punctuation dropped, spaces as -, a repeat numbered -1, -2.
func headingSlugs(text string) map[string]bool {
	slugs := map[string]bool{}
	seen := map[string]int{}
	text = regexp.MustCompile("(?s)```.*?```").ReplaceAllString(text, "")
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`).FindAllStringSubmatch(text, -1) {
		s := strings.ToLower(m[1])
		s = regexp.MustCompile(`[^\p{L}\p{N} _-]`).ReplaceAllString(s, "")
		s = strings.ReplaceAll(s, " ", "-")
		if n := seen[s]; n > 0 {
			slugs[s+"-"+strconv.Itoa(n)] = true
		} else {
			slugs[s] = true
		}
		seen[s]++
	}
	return slugs
}

// TestArchitectureListsPackages: docs/architecture.md names every package
// under internal/, so the map of the code stays whole.
func TestArchitectureListsPackages(t *testing.T) {
	doc := readFile(t, "../docs/architecture.md")
	dirs, err := filepath.Glob("../internal/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		if gos, _ := filepath.Glob(filepath.Join(d, "*.go")); len(gos) == 0 {
			continue
		}
		n++
		if name := filepath.Base(d); !strings.Contains(doc, "| `"+name+"` |") {
			t.Errorf("docs/architecture.md does not list internal/%s in its packages table", name)
		}
	}
	if n == 0 {
		t.Fatal("no packages under internal/")
	}
}

// TestArchitectureListsBuckets: docs/architecture.md's table of the index
// names every bucket internal/store declares, and every meta key.
func TestArchitectureListsBuckets(t *testing.T) {
	doc := readFile(t, "../docs/architecture.md")
	files, err := filepath.Glob("../internal/store/*.go")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`\b(bucket|key)[A-Z]\w*\s*=\s*\[\]byte\("([a-z0-9-]+)"\)`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, m := range decl.FindAllStringSubmatch(readFile(t, f), -1) {
			n++
			want := "`" + m[2] + "`"
			if m[1] == "bucket" {
				want = "| `" + m[2] + "` |"
			}
			if !strings.Contains(doc, want) {
				t.Errorf("docs/architecture.md does not describe the index's %s %q (%s)", m[1], m[2], repoPath(f))
			}
		}
	}
	if n < 10 {
		t.Errorf("%d buckets and keys found in internal/store: the pattern is stale", n)
	}
}

// TestREADMELength: the README stays a guide of a few screens (issue 21);
// reference material goes to docs/.
func TestREADMELength(t *testing.T) {
	const max = 250
	if n := strings.Count(readFile(t, "../README.md"), "\n"); n > max {
		t.Errorf("README.md has %d lines, more than %d: move the reference material to docs/", n, max)
	}
}
