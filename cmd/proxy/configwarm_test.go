package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

func TestConfigWarm(t *testing.T) {
	for _, tc := range []struct {
		name string
		toml string
		want []warm.Watch
		err  string
	}{
		{
			name: "two flakes, defaults",
			toml: `[http]
listen = "127.0.0.1:0"
[[warm]]
flake = "github:me/macs"
attrs = ["darwinConfigurations.studio.system", "packages.aarch64-linux.builder-image"]
keep = 5
interval = "30m"
timeout = "20m"
max-memory = "16GiB"

[[warm]]
flake = "path:/srv/flake"
attrs = ["packages.x86_64-linux.default"]
`,
			want: []warm.Watch{
				{Flake: "github:me/macs", Attrs: []string{"darwinConfigurations.studio.system", "packages.aarch64-linux.builder-image"}, Keep: 5, Interval: 30 * time.Minute,
					Timeout: 20 * time.Minute, MaxMemory: 16 << 30},
				{Flake: "path:/srv/flake", Attrs: []string{"packages.x86_64-linux.default"}, Keep: 3, Interval: 10 * time.Minute,
					Timeout: 10 * time.Minute, MaxMemory: 8 << 30},
			},
		},
		{name: "none", toml: "[http]\nlisten = \"127.0.0.1:0\"\n"},
		{name: "unknown key", toml: "[[warm]]\nflake = \"github:me/macs\"\nattrs = [\"a\"]\nkeep-latest = 2\n", err: `[[warm]]: unknown key "keep-latest"`},
		{name: "no attrs", toml: "[[warm]]\nflake = \"github:me/macs\"\n", err: "[[warm]] number 1: attrs"},
		{name: "attr in flake", toml: "[[warm]]\nflake = \"github:me/macs#a\"\nattrs = [\"a\"]\n", err: "name the attributes in attrs"},
		{name: "keep 0", toml: "[[warm]]\nflake = \"f\"\nattrs = [\"a\"]\nkeep = 0\n", err: "keep: want 1 or more, got 0"},
		{name: "no memory bound", toml: "[[warm]]\nflake = \"f\"\nattrs = [\"a\"]\nmax-memory = \"0\"\n",
			want: []warm.Watch{{Flake: "f", Attrs: []string{"a"}, Keep: 3, Interval: 10 * time.Minute, Timeout: 10 * time.Minute, MaxMemory: -1}}},
		{name: "bad memory", toml: "[[warm]]\nflake = \"f\"\nattrs = [\"a\"]\nmax-memory = \"lots\"\n", err: "max-memory: "},
		{name: "timeout too short", toml: "[[warm]]\nflake = \"f\"\nattrs = [\"a\"]\ntimeout = \"1s\"\n", err: "timeout: want a duration of 10s or more"},
		{name: "interval too short", toml: "[[warm]]\nflake = \"f\"\nattrs = [\"a\"]\ninterval = \"1s\"\n", err: `interval: want a duration of 10s or more like "10m", got "1s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "proxy.toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := parseServeConfig([]string{"--config", path, "--cache-dir", t.TempDir()}, func(string) string { return "" })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, cfg.warms); d != "" {
				t.Errorf("warms (-want +got):\n%s", d)
			}
			// check-config prints them, and what it prints reads back the same.
			var out, errOut bytes.Buffer
			if code := checkConfigCommand([]string{"--config", path, "--cache-dir", t.TempDir()}, &out, &errOut); code != 0 {
				t.Fatalf("check-config: exit %d: %s", code, errOut.String())
			}
			again := filepath.Join(t.TempDir(), "again.toml")
			if err := os.WriteFile(again, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			reread, err := readWarms(again)
			if err != nil {
				t.Fatalf("check-config's output: %v\n%s", err, out.String())
			}
			if d := cmp.Diff(tc.want, reread); d != "" {
				t.Errorf("warms printed by check-config (-want +got):\n%s", d)
			}
		})
	}
}
