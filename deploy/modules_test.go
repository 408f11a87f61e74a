package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
)

// TestModuleSettings runs what the NixOS and nix-darwin modules generate
// and document (deploy/nix/settings.nix) through check-config: every
// documented settings key with its default, the documented example on top,
// and every secret flag with a valid file.
func TestModuleSettings(t *testing.T) {
	flags := flagNames(t)
	sections := settingSections(t)
	type option struct {
		Type        string `json:"type"`
		Values      []any  `json:"values"` // of an enum
		Default     any    `json:"default"`
		Description string `json:"description"`
	}
	var opts map[string]option
	nixEval(t, `(import ./settings.nix).options "/var/lib/nix-cache-proxy"`, &opts)
	if len(opts) == 0 {
		t.Fatal("settings.nix documents no options")
	}
	defaults := map[string]any{}
	for _, k := range sortedKeys(opts) {
		o := opts[k]
		if !flags[k] || k == "config" {
			t.Errorf("settings.%s is documented in the modules but is no setting of nix-cache-proxy serve", k)
		}
		if o.Description == "" {
			t.Errorf("settings.%s has no description", k)
		}
		defaults[k] = fromJSON(o.Default)
	}
	effective := checkConfig(t, "module defaults", nil, "--config", writeTOML(t, sections.of(defaults)))
	for _, k := range sortedKeys(opts) {
		v := sections.get(effective, k)
		_, isList := v.([]any)
		if wantList := opts[k].Type == "listOf str"; isList != wantList {
			t.Errorf("settings.%s has type %q, but check-config prints it as %T", k, opts[k].Type, v)
		}
	}

	// Every value an enum allows is one serve takes.
	for _, k := range sortedKeys(opts) {
		if opts[k].Type == "enum" && len(opts[k].Values) == 0 {
			t.Errorf("settings.%s is an enum of no values", k)
		}
		for _, v := range opts[k].Values {
			checkConfig(t, "settings."+k+" = "+fmt.Sprint(v), nil, "--config", writeTOML(t, sections.of(map[string]any{k: v})))
		}
	}

	var example map[string]any
	nixEval(t, `(import ./settings.nix).example`, &example)
	merged := map[string]any{}
	for k, v := range defaults {
		merged[k] = v
	}
	for k, v := range fromJSON(example).(map[string]any) {
		merged[k] = v
	}
	config := writeTOML(t, sections.of(merged))
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
// literally ("--config") are flags of serve.
func TestModuleFlagLiterals(t *testing.T) {
	flags := flagNames(t)
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
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			seen++
			if !flags[m[1]] {
				t.Errorf("%s passes --%s, which nix-cache-proxy serve does not take", f, m[1])
			}
		}
	}
	if seen == 0 {
		t.Error("no flag literal found in the Nix files: the pattern is stale")
	}
}

// sectionMap is settings.nix's sections: where each flat setting of the
// modules, named as its flag, lives in the config file.
type sectionMap map[string][2]string

func settingSections(t *testing.T) sectionMap {
	t.Helper()
	var m sectionMap
	nixEval(t, `(import ./settings.nix).sections`, &m)
	return m
}

// of is flat settings in the config file's sections, as toSections
// writes them.
func (m sectionMap) of(flat map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range flat {
		to, ok := m[k]
		if !ok {
			out[k] = v
			continue
		}
		if out[to[0]] == nil {
			out[to[0]] = map[string]any{}
		}
		out[to[0]].(map[string]any)[to[1]] = v
	}
	return out
}

// get is a flat setting's value in check-config's output.
func (m sectionMap) get(effective map[string]any, flag string) any {
	to := m[flag]
	return setting(effective, to[0], to[1])
}

// TestModuleSections: settings.nix places every flag of serve in the
// section and key the binary reads it from, and places nothing else.
func TestModuleSections(t *testing.T) {
	flags := flagNames(t)
	keys := configKeys(t)
	sections := settingSections(t)
	for _, f := range sortedKeys(flags) {
		if _, ok := sections[f]; !ok && f != "config" {
			t.Errorf("--%s has no entry in settings.nix's sections: the modules would write settings.%s at the top level, which check-config refuses", f, f)
		}
	}
	for _, f := range sortedKeys(sections) {
		to := sections[f]
		if !flags[f] {
			t.Errorf("settings.nix's sections place %s, which is no flag of serve", f)
		}
		if _, ok := keys[to[0]][to[1]]; !ok {
			t.Errorf("settings.nix's sections place %s at [%s] %s, which check-config does not print", f, to[0], to[1])
		}
	}
	// What the modules write: the flat settings in sections.
	var written map[string]any
	nixEval(t, `(import ./settings.nix).toSections { listen = "0.0.0.0:5575"; pin = [ ]; priority = 20; log-format = "json"; }`, &written)
	want := map[string]any{"http": map[string]any{"listen": "0.0.0.0:5575", "priority": json.Number("20")},
		"disk": map[string]any{"pins": []any{}}, "log": map[string]any{"format": "json"}}
	if !reflect.DeepEqual(written, want) {
		t.Errorf("toSections wrote %v, want %v", written, want)
	}
}
