package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// envFlag maps NIX_CACHE_PROXY_CACHE_DIR to cache-dir.
func envFlag(name string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "NIX_CACHE_PROXY_")), "_", "-")
}

// serveArgs checks the arguments after "serve" name flags serve takes and
// rewrites them for a check-config run here: the --config file becomes a
// small valid one, paths under replace become temp dirs.
func serveArgs(t *testing.T, what string, args []string, flags map[string]bool, replace map[string]string) []string {
	t.Helper()
	i := 0
	for i < len(args) && args[i] != "serve" {
		i++
	}
	if i == len(args) {
		t.Fatalf("%s: no serve in %q", what, args)
	}
	out := []string{}
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		if strings.HasPrefix(a, "--") && !flags[strings.TrimPrefix(a, "--")] {
			t.Errorf("%s passes %s, which nix-cache-proxy serve does not take", what, a)
		}
		if a == "--config" && j+1 < len(args) {
			out = append(out, a, writeTOML(t, map[string]any{"http": map[string]any{"listen": "0.0.0.0:5575"}}))
			j++
			continue
		}
		for from, to := range replace {
			a = strings.ReplaceAll(a, from, to)
		}
		out = append(out, a)
	}
	return out
}

// TestSystemdUnit checks the unit's ExecStart and its secrets drop-in:
// flags and environment variables are serve's, and the whole runs through
// check-config with the credentials in place. (systemd-analyze verify runs
// in .ci/run.)
func TestSystemdUnit(t *testing.T) {
	flags := flagNames(t)
	unit := readFile(t, "nix-cache-proxy.service")
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("no ExecStart in nix-cache-proxy.service")
	}
	state := t.TempDir()
	args := serveArgs(t, "nix-cache-proxy.service", strings.Fields(m[1]), flags, map[string]string{"${STATE_DIRECTORY}": state})
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=nix-cache-proxy", "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "LimitNOFILE="} {
		if !strings.Contains(unit, want) {
			t.Errorf("nix-cache-proxy.service lacks %q", strings.TrimSpace(want))
		}
	}

	dropIn := readFile(t, "nix-cache-proxy.service.d/secrets.conf")
	creds := t.TempDir()
	var env []string
	loaded := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^LoadCredential=([^:\n]+):`).FindAllStringSubmatch(dropIn, -1) {
		loaded[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^Environment=(NIX_CACHE_PROXY_[A-Z0-9_]+)=%d/(\S+)$`).FindAllStringSubmatch(dropIn, -1) {
		flag := envFlag(m[1])
		if !flags[flag] {
			t.Errorf("secrets.conf sets %s, but serve has no --%s", m[1], flag)
			continue
		}
		if !loaded[m[2]] {
			t.Errorf("secrets.conf points %s at credential %q, which no LoadCredential loads", m[1], m[2])
		}
		p := sampleSecret(t, t.TempDir(), flag)
		if err := os.Rename(p, filepath.Join(creds, m[2])); err != nil {
			t.Fatal(err)
		}
		env = append(env, m[1]+"="+filepath.Join(creds, m[2]))
	}
	if len(env) == 0 {
		t.Fatal("secrets.conf passes no credential")
	}
	// Every secret a recipe of the docs needs: upstream credentials, the
	// admin token, and for uploads without cachix the write token and the
	// signing key.
	for _, flag := range []string{"netrc-file", "admin-token-file", "write-token-file", "secret-key-file"} {
		if !strings.Contains(dropIn, "Environment=NIX_CACHE_PROXY_"+strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))+"=%d/") {
			t.Errorf("secrets.conf lacks the credential for --%s", flag)
		}
	}
	got := checkConfig(t, "nix-cache-proxy.service", env, args...)
	if dir := setting(got, "disk", "cache-dir"); dir != state {
		t.Errorf("cache-dir = %v, want the StateDirectory", dir)
	}
}

// TestLaunchdPlist loads the plist with Python's plistlib (as launchd's
// parser would refuse a malformed one) and checks it runs serve as the
// dedicated user with arguments check-config accepts.
func TestLaunchdPlist(t *testing.T) {
	flags := flagNames(t)
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 not available, and CI is set")
		}
		t.Skip("python3 not available")
	}
	out, err := exec.Command("python3", "-c",
		"import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
		"org.nix-cache-proxy.plist").Output()
	if err != nil {
		t.Fatalf("plistlib cannot load org.nix-cache-proxy.plist: %v", err)
	}
	var p struct {
		Label            string
		ProgramArguments []string
		UserName         string
		GroupName        string
		RunAtLoad        bool
		KeepAlive        bool
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if p.UserName != "_nix-cache-proxy" || p.GroupName != "_nix-cache-proxy" {
		t.Errorf("runs as %q:%q, want _nix-cache-proxy:_nix-cache-proxy", p.UserName, p.GroupName)
	}
	if !p.RunAtLoad || !p.KeepAlive || p.Label == "" {
		t.Errorf("Label %q, RunAtLoad %v, KeepAlive %v", p.Label, p.RunAtLoad, p.KeepAlive)
	}
	state := t.TempDir()
	args := serveArgs(t, "org.nix-cache-proxy.plist", p.ProgramArguments, flags, map[string]string{"/var/lib/nix-cache-proxy": state})
	if dir := setting(checkConfig(t, "org.nix-cache-proxy.plist", nil, args...), "disk", "cache-dir"); dir != state {
		t.Errorf("cache-dir = %v, want %s", dir, state)
	}
}

// TestContainerEnvironment runs the environment the Containerfile and the
// compose example set through check-config.
func TestContainerEnvironment(t *testing.T) {
	flags := flagNames(t)
	for file, pattern := range map[string]string{
		"container/Containerfile": `(NIX_CACHE_PROXY_[A-Z0-9_]+)=(\S+)`,
		"container/compose.yml":   `(NIX_CACHE_PROXY_[A-Z0-9_]+): "([^"]*)"`,
	} {
		var env []string
		for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(readFile(t, file), -1) {
			if !flags[envFlag(m[1])] {
				t.Errorf("%s sets %s, but serve has no --%s", file, m[1], envFlag(m[1]))
			}
			env = append(env, m[1]+"="+m[2])
		}
		if len(env) == 0 {
			t.Errorf("%s sets no NIX_CACHE_PROXY_ variable: the pattern is stale", file)
			continue
		}
		checkConfig(t, file, env)
	}
}

// TestREADMEConfigExamples runs every TOML example of the READMEs and
// docs/*.md through check-config: what users copy must work.
func TestREADMEConfigExamples(t *testing.T) {
	n := 0
	for _, b := range blocks(t, "toml", append(docFiles(t), "README.md")...) {
		n++
		p := filepath.Join(t.TempDir(), "example.toml")
		if err := os.WriteFile(p, []byte(b.body), 0o644); err != nil {
			t.Fatal(err)
		}
		checkConfig(t, b.String(), nil, "--config", p)
	}
	if n == 0 {
		t.Error("no ```toml example in the READMEs")
	}
}
