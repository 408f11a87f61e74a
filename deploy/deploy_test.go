// Package deploy holds no Go code: its test keeps the deployment files
// (flake modules, systemd unit, launchd plist, container, the READMEs'
// config examples) in step with the binary's flags, by running every
// settings key and flag they use through `nix-cache-proxy check-config`.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// bin is the nix-cache-proxy built for this test run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploy-test")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "nix-cache-proxy")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/proxy").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		panic("go build ../cmd/proxy: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary with env added to a clean environment (HOME for the
// default cache dir) and returns its stdout, stderr and exit code. It
// kills it after a minute: every command these tests run ends by itself,
// and one misread (a server started instead of a flag parse) must not hang
// the test.
func run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"HOME=" + t.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: still running after a minute, killed", bin, args)
	}
	return stdout.String(), stderr.String(), code
}

// checkConfig runs check-config and fails the test unless it accepts the
// configuration; it returns the effective settings it printed.
func checkConfig(t *testing.T, what string, env []string, args ...string) map[string]any {
	t.Helper()
	stdout, stderr, code := run(t, env, append([]string{"check-config"}, args...)...)
	if code != 0 {
		t.Fatalf("%s: check-config %s refused it (exit %d): %s", what, strings.Join(args, " "), code, stderr)
	}
	var m map[string]any
	if _, err := toml.Decode(stdout, &m); err != nil {
		t.Fatalf("%s: check-config printed no TOML: %v\n%s", what, err, stdout)
	}
	return m
}

// flagNames are the flags `serve --help-all` lists: what the binary accepts, read
// from the binary itself so flags added later are known here too.
func flagNames(t *testing.T) map[string]bool {
	t.Helper()
	names := commandFlags(t, "serve")
	if !names["config"] {
		t.Fatal("serve --help-all lists no --config")
	}
	return names
}

// commandFlags returns the flag names `nix-cache-proxy COMMAND -h` lists
// (`serve --help-all` for serve: its -h shows the everyday ones).
func commandFlags(t *testing.T, command string) map[string]bool {
	t.Helper()
	help := "-h"
	if command == "serve" {
		help = "--help-all"
	}
	stdout, _, code := run(t, nil, command, help)
	if code != 0 {
		t.Fatalf("%s %s: exit %d", command, help, code)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(stdout, -1) {
		names[m[1]] = true
	}
	if !names["listen"] {
		t.Fatalf("%s %s lists no --listen:\n%s", command, help, stdout)
	}
	return names
}

// configKeys are the sections of the config file and their keys, as
// check-config prints them with nothing set.
func configKeys(t *testing.T) map[string]map[string]any {
	t.Helper()
	keys := map[string]map[string]any{}
	for section, v := range checkConfig(t, "no settings", nil) {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("check-config printed %s = %v outside a section", section, v)
		}
		keys[section] = m
	}
	return keys
}

// setting is the value of [section] key in check-config's output.
func setting(effective map[string]any, section, key string) any {
	m, _ := effective[section].(map[string]any)
	return m[key]
}

func writeTOML(t *testing.T, v map[string]any) string {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleSecret writes a valid file for a flag that takes a secret file.
func sampleSecret(t *testing.T, dir, flag string) string {
	t.Helper()
	p := filepath.Join(dir, flag)
	var content string
	switch {
	case flag == "netrc-file":
		content = "machine mycache.cachix.org password 0123456789abcdef\n"
	case flag == "secret-key-file":
		if _, stderr, code := run(t, nil, "keygen", "--secret-key-file", p, "--public-key-file", p+".pub", "cache.lan-1"); code != 0 {
			t.Fatalf("keygen: %s", stderr)
		}
		return p
	case strings.HasSuffix(flag, "-token-file"):
		content = "0123456789abcdef0123456789abcdef\n"
	default:
		t.Fatalf("no sample file for --%s: teach sampleSecret what it holds", flag)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nixEval evaluates expr (relative paths are against deploy/nix) with
// nix-instantiate into v; it needs no nixpkgs. Without nix-instantiate the
// test skips, or fails when CI is set.
func nixEval(t *testing.T, expr string, v any) {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nix-instantiate not available, and CI is set")
		}
		t.Skip("nix-instantiate not available (Debian: nix-bin)")
	}
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	cmd.Dir = "nix"
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("nix-instantiate %s: %v\n%s", expr, err, stderr)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatal(err)
	}
}

// fromJSON turns json.Numbers into int64 (every number in the settings is
// an integer) so they are written to TOML as such.
func fromJSON(v any) any {
	switch v := v.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		return v.String()
	case []any:
		for i := range v {
			v[i] = fromJSON(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = fromJSON(v[k])
		}
	}
	return v
}
