package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// sectioned is settings by [section] key.
type sectioned[V any] map[string]map[string]V

// TestModuleSettings runs what the NixOS and nix-darwin modules add to the
// config file's keys (deploy/nix/settings.nix) through check-config: their
// defaults, every value of the enums they narrow a key to, the documented
// example on top of the defaults, and every secret flag with a valid file.
// Each key they name is one of the binary's (config-keys.nix).
func TestModuleSettings(t *testing.T) {
	flags := flagNames(t)
	var keys sectioned[struct {
		Type        string `json:"type"`
		Description string `json:"description"`
	}]
	nixEval(t, `(import ./config-keys.nix).keys`, &keys)
	known := func(what, section, key string) {
		if _, ok := keys[section][key]; !ok {
			t.Errorf("settings.nix's %s names [%s] %s, which is no key of the config file", what, section, key)
		}
	}
	for section, m := range keys {
		for key, k := range m {
			if k.Description == "" || k.Type == "" {
				t.Errorf("config-keys.nix: [%s] %s has no type or description", section, key)
			}
		}
	}

	var defaults, example sectioned[any]
	nixEval(t, `(import ./settings.nix).defaults "/var/lib/nix-cache-proxy"`, &defaults)
	nixEval(t, `(import ./settings.nix).example`, &example)
	var notes sectioned[string]
	nixEval(t, `(import ./settings.nix).notes`, &notes)
	var narrowed sectioned[struct {
		Type   string `json:"type"`
		Values []any  `json:"values"` // of an enum
	}]
	nixEval(t, `(import ./settings.nix).types`, &narrowed)
	for what, m := range map[string]map[string]map[string]any{"defaults": defaults, "example": example} {
		for section, keys := range m {
			for key := range keys {
				known(what, section, key)
			}
		}
	}
	for section, m := range notes {
		for key := range m {
			known("notes", section, key)
		}
	}
	for section, m := range narrowed {
		for key, n := range m {
			known("types", section, key)
			if n.Type == "enum" && len(n.Values) == 0 {
				t.Errorf("settings.%s.%s is an enum of no values", section, key)
			}
			// Every value an enum allows is one serve takes.
			for _, v := range n.Values {
				checkConfig(t, fmt.Sprintf("settings.%s.%s = %v", section, key, v), nil,
					"--config", writeTOML(t, map[string]any{section: map[string]any{key: v}}))
			}
		}
	}

	merged := map[string]any{}
	for _, m := range []sectioned[any]{defaults, example} {
		for section, keys := range m {
			if merged[section] == nil {
				merged[section] = map[string]any{}
			}
			for k, v := range keys {
				merged[section].(map[string]any)[k] = fromJSON(v)
			}
		}
	}
	config := writeTOML(t, merged)
	checkConfig(t, "module example settings", nil, "--config", config)

	var secrets map[string]struct {
		Flag        string `json:"flag"`
		Credential  string `json:"credential"`
		Description string `json:"description"`
	}
	nixEval(t, `(import ./settings.nix).secrets`, &secrets)
	args := []string{"--config", config}
	dir := t.TempDir()
	for _, name := range sortedKeys(secrets) {
		s := secrets[name]
		if !flags[s.Flag] {
			t.Errorf("secret option %s passes --%s, which nix-cache-proxy serve does not take", name, s.Flag)
			continue
		}
		args = append(args, "--"+s.Flag, sampleSecret(t, dir, s.Flag))
	}
	checkConfig(t, "module secrets", nil, args...)
}

// TestModuleFlagLiterals checks the flags the Nix files spell out
// literally ("--config") are flags of serve, or of relay in relay.nix.
func TestModuleFlagLiterals(t *testing.T) {
	serveFlags, relayFlags := flagNames(t), commandFlags(t, "relay")
	files, err := filepath.Glob("nix/*.nix")
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/nix/*.nix: %v", err)
	}
	files = append(files, "../flake.nix")
	lit := regexp.MustCompile(`"--([a-z][a-z0-9-]*)"`)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		flags, command := serveFlags, "serve"
		if filepath.Base(f) == "relay.nix" {
			flags, command = relayFlags, "relay"
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			seen++
			if !flags[m[1]] {
				t.Errorf("%s passes --%s, which nix-cache-proxy %s does not take", f, m[1], command)
			}
		}
	}
	if seen == 0 {
		t.Error("no flag literal found in the Nix files: the pattern is stale")
	}
}
