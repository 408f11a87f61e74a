package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEveryFlagHasAKey: every serve flag but --config is one key of the
// config file, and every key names a flag: a flag added without its key
// could not be set from the file, and the docs would miss it.
func TestEveryFlagHasAKey(t *testing.T) {
	fs := newServeFlags("serve", &serveConfig{})
	seen := map[string]string{}
	for _, k := range fileKeys(new(fileConfig)) {
		if fs.Lookup(k.flag) == nil {
			t.Errorf("%s names --%s, which serve does not take", k.name(), k.flag)
		}
		if prev, dup := seen[k.flag]; dup {
			t.Errorf("--%s is both %s and %s", k.flag, prev, k.name())
		}
		seen[k.flag] = k.name()
		if k.key == "" || k.section == "" || strings.ToLower(k.key) != k.key {
			t.Errorf("key %q in section %q: want a lower-case name", k.key, k.section)
		}
		if sectionDocs[k.section] == "" {
			t.Errorf("section [%s] has no entry in sectionDocs", k.section)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := seen[f.Name]; !ok && f.Name != "config" {
			t.Errorf("--%s has no key in the config file: give it one in fileConfig, in the section it belongs to", f.Name)
		}
	})
}

// TestEveryKeyFromTheFile sets every key of the config file and reads
// each back from its flag: the typed value reaches the flag's variable
// for every key and type.
func TestEveryKeyFromTheFile(t *testing.T) {
	var file strings.Builder
	want := map[string]string{}
	section := ""
	for i, k := range fileKeys(new(fileConfig)) {
		if k.section != section {
			section = k.section
			fmt.Fprintf(&file, "[%s]\n", section)
		}
		var v, s string
		switch k.value.kind() {
		case "string":
			v, s = fmt.Sprintf("%q", "v"+k.key), "v"+k.key
		case "integer":
			v = fmt.Sprint(100 + i)
			s = v
		case "boolean":
			v, s = "false", "false"
		case "list of strings":
			v, s = fmt.Sprintf(`["%s-1", "%s-2"]`, k.key, k.key), k.key+"-1 "+k.key+"-2"
		case "duration":
			d := time.Duration(i+1) * time.Second
			v, s = fmt.Sprintf("%q", d.String()), d.String()
		case "size":
			v, s = fmt.Sprintf(`"%dMiB"`, i+1), fmt.Sprintf("%dMiB", i+1)
		default:
			t.Fatalf("%s: no sample for a %s", k.name(), k.value.kind())
		}
		fmt.Fprintf(&file, "%s = %s\n", k.key, v)
		want[k.flag] = s
	}
	path := filepath.Join(t.TempDir(), "all.toml")
	if err := os.WriteFile(path, []byte(file.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := newServeFlags("serve", &serveConfig{})
	from, err := loadConfig(fs, []string{"--config", path}, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, file.String())
	}
	for name, w := range want {
		if got := fs.Lookup(name).Value.String(); got != w {
			t.Errorf("--%s = %q, want %q from the file", name, got, w)
		}
		if k, _ := keyOfFlag(name); from[name] != k.name()+" in "+path {
			t.Errorf("--%s: source %q", name, from[name])
		}
	}
}
