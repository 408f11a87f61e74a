package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The module evaluations (deploy/nix/tests/eval.nix) need snapshots of
// nixpkgs' lib and of nix-darwin: test fixtures kept outside the
// repository, in shared/nix-src/ beside the checkout (see deploy/README.md).

// nixSrc returns the directory holding nixpkgs-lib/ and nix-darwin/: in
// NIX_SRC if set, else shared/nix-src beside the checkout (or beside the
// main checkout, for a git worktree). Without it the test skips, or fails
// when CI is set.
func nixSrc(t *testing.T) string {
	t.Helper()
	var candidates []string
	if dir := os.Getenv("NIX_SRC"); dir != "" {
		candidates = append(candidates, dir)
	}
	candidates = append(candidates, filepath.Join("..", "..", "shared", "nix-src"))
	// A worktree's main checkout: the parent of git's common directory.
	if out, err := exec.Command("git", "rev-parse", "--path-format=absolute", "--git-common-dir").Output(); err == nil {
		main := filepath.Dir(strings.TrimSpace(string(out)))
		candidates = append(candidates, filepath.Join(main, "..", "shared", "nix-src"))
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "nix-darwin", "eval-config.nix")); err == nil {
			abs, err := filepath.Abs(dir)
			if err != nil {
				t.Fatal(err)
			}
			return abs
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("no nixpkgs-lib and nix-darwin snapshots in any of %v, and CI is set", candidates)
	}
	t.Skipf("no nixpkgs-lib and nix-darwin snapshots in any of %v", candidates)
	return ""
}

// moduleEval is one evaluation of eval.nix: the JSON it printed, and the
// store it wrote the generated files to (read them with file).
type moduleEval struct {
	store string
	out   []byte
}

// evalModules evaluates `e.darwin [ MODULE ]` or `e.nixos [ MODULE ]`
// (platform), where e is deploy/nix/tests/eval.nix and MODULE is Nix
// code evaluated in deploy/nix (./settings.nix is the settings' doc, e.flake
// the flake's outputs). It returns the evaluation and nix-instantiate's
// error, if it failed, with its stderr.
func evalModules(t *testing.T, platform, module string) (moduleEval, string, error) {
	t.Helper()
	src := nixSrc(t)
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nix-instantiate not available, and CI is set")
		}
		t.Skip("nix-instantiate not available (Debian: nix-bin)")
	}
	store := t.TempDir()
	expr := "let e = import ./tests/eval.nix { src = " + src + "; }; in e." + platform + " [ (" + module + ") ]"
	cmd := exec.Command("nix-instantiate", "--read-write-mode", "--store", store, "--eval", "--strict", "--json", "-E", expr)
	cmd.Dir = "nix"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return moduleEval{store: store, out: stdout.Bytes()}, stderr.String(), err
}

// mustEval is evalModules that fails the test when the evaluation fails,
// decoding its output into v.
func mustEval(t *testing.T, platform, module string, v any) moduleEval {
	t.Helper()
	e, stderr, err := evalModules(t, platform, module)
	if err != nil {
		t.Fatalf("evaluating %s with %s: %v\n%s", platform, module, err, stderr)
	}
	if err := json.Unmarshal(e.out, v); err != nil {
		t.Fatalf("eval.nix printed no JSON: %v\n%s", err, e.out)
	}
	return e
}

// file reads a store path the evaluation wrote (a stub builder's output).
func (e moduleEval) file(t *testing.T, path string) string {
	t.Helper()
	return readFile(t, filepath.Join(e.store, path))
}

// settingsFile turns the JSON settings file the stub pkgs.formats.toml
// wrote at path into the TOML file the real one would have written, and
// returns its path.
func (e moduleEval) settingsFile(t *testing.T, path string) string {
	t.Helper()
	var settings map[string]any
	dec := json.NewDecoder(strings.NewReader(e.file(t, path)))
	dec.UseNumber()
	if err := dec.Decode(&settings); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return writeTOML(t, fromJSON(settings).(map[string]any))
}

// checkedConfig follows the --config path a module passes (the output of
// its check-config build step) to the settings file that step checks, and
// returns that file as TOML. The step must run the package's check-config
// on that file and copy it to $out.
func (e moduleEval) checkedConfig(t *testing.T, what, checked string) string {
	t.Helper()
	script := e.file(t, checked)
	m := regexp.MustCompile(`(?m)^/nix/store/\S+/bin/nix-cache-proxy check-config --config (\S+)$`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("%s: the config's build step does not run check-config --config FILE:\n%s", what, script)
	}
	if !strings.Contains(script, "\ncp "+m[1]+" $out\n") {
		t.Errorf("%s: the config's build step does not copy the file it checked:\n%s", what, script)
	}
	return e.settingsFile(t, m[1])
}

// evalError evaluates module and fails the test unless the evaluation
// fails with every one of want in its message.
func evalError(t *testing.T, platform, module string, want ...string) {
	t.Helper()
	_, stderr, err := evalModules(t, platform, module)
	if err == nil {
		t.Fatalf("%s accepted %s; want an error with %q", platform, module, want)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("%s refused %s without %q in the message:\n%s", platform, module, w, stderr)
		}
	}
}

// shellWords splits a command line as sh (and systemd, for ExecStart)
// would, with Python's shlex.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))", line).Output()
	if err != nil {
		t.Fatalf("shlex.split %q: %v", line, err)
	}
	var words []string
	if err := json.Unmarshal(out, &words); err != nil {
		t.Fatal(err)
	}
	return words
}

// plist parses a property list with Python's plistlib into v.
func plist(t *testing.T, text string, v any) {
	t.Helper()
	needPython(t)
	cmd := exec.Command("python3", "-c", "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plistlib cannot load the plist: %v\n%s", err, text)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatal(err)
	}
}

func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 not available, and CI is set")
		}
		t.Skip("python3 not available")
	}
}
