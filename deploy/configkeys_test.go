package deploy

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// configKey is one row of docs/configuration.md's settings table.
type configKey struct {
	section, key, flag, typ, def, description string
}

// referenceKeys reads the sections and settings of the config file from
// docs/configuration.md, which cmd/proxy generates from its flags and
// config types (and checks in its own test).
func referenceKeys(t *testing.T) (sections [][2]string, keys []configKey) {
	t.Helper()
	doc := readFile(t, "../docs/configuration.md")
	for _, m := range regexp.MustCompile("(?m)^- `\\[([a-z]+)\\]`: (.+)$").FindAllStringSubmatch(doc, -1) {
		sections = append(sections, [2]string{m[1], m[2]})
	}
	row := regexp.MustCompile("(?m)^\\| `\\[([a-z]+)\\]` \\| `([a-z0-9-]+)` \\| `--([a-z0-9-]+)` \\| `[A-Z0-9_]+` \\| ([a-z ]+) \\| ([^|]*) \\| ([^|]+) \\|$")
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		keys = append(keys, configKey{m[1], m[2], m[3], m[4], strings.TrimSpace(m[5]), strings.TrimSpace(m[6])})
	}
	if len(sections) == 0 || len(keys) == 0 {
		t.Fatal("docs/configuration.md: no sections or settings table found (the patterns here are stale)")
	}
	return sections, keys
}

// nixString quotes s as a Nix string.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", "\\${")
	return `"` + r.Replace(s) + `"`
}

// configKeysNix is what deploy/nix/config-keys.nix must hold.
func configKeysNix(sections [][2]string, keys []configKey) string {
	var b strings.Builder
	b.WriteString(`# The sections and keys of nix-cache-proxy's config file, for the modules'
# typed settings (common.nix). Generated from docs/configuration.md (itself
# generated from the binary) by deploy's TestConfigKeysNix; rewrite it with
#   UPDATE=1 go test ./deploy -run TestConfigKeysNix
# Edit the flags and config types in cmd/proxy, not this file.
{
  sections = {
`)
	for _, s := range sections {
		fmt.Fprintf(&b, "    %s = %s;\n", s[0], nixString(s[1]))
	}
	b.WriteString("  };\n\n  keys = {\n")
	for i, s := range sections {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "    %s = {\n", s[0])
		for _, k := range keys {
			if k.section == s[0] {
				fmt.Fprintf(&b, "      %s = {\n        type = %s;\n        flag = %s;\n        default = %s;\n        description = %s;\n      };\n",
					k.key, nixString(k.typ), nixString(k.flag), nixString(k.def), nixString(k.description))
			}
		}
		b.WriteString("    };\n")
	}
	b.WriteString("  };\n}\n")
	return b.String()
}

// TestConfigKeysNix keeps deploy/nix/config-keys.nix, the keys the
// modules type, in step with the binary's config file (UPDATE=1 rewrites
// it), and checks the binary's check-config prints the same sections and
// keys.
func TestConfigKeysNix(t *testing.T) {
	sections, keys := referenceKeys(t)
	want := configKeysNix(sections, keys)
	const path = "nix/config-keys.nix"
	if os.Getenv("UPDATE") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, path); got != want {
		t.Errorf("deploy/%s is stale: rewrite it with UPDATE=1 go test ./deploy -run TestConfigKeysNix", path)
	}

	printed := configKeys(t)
	seen := map[string]bool{}
	for _, s := range sections {
		seen[s[0]] = true
		if _, ok := printed[s[0]]; !ok {
			t.Errorf("docs/configuration.md has [%s], which check-config does not print", s[0])
		}
	}
	for s := range printed {
		if !seen[s] {
			t.Errorf("check-config prints [%s], which docs/configuration.md does not list", s)
		}
	}
	n := map[string]int{}
	for _, k := range keys {
		n[k.section]++
		if _, ok := printed[k.section][k.key]; !ok {
			t.Errorf("docs/configuration.md has [%s] %s, which check-config does not print", k.section, k.key)
		}
	}
	for s, m := range printed {
		if len(m) != n[s] {
			t.Errorf("check-config prints %d keys in [%s], docs/configuration.md %d", len(m), s, n[s])
		}
	}
}
