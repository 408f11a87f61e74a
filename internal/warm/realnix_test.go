package warm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestRealNix runs the host's nix (Debian's 2.8 here) on a flake of two
// derivations: what the recorded outputs stand for.
func TestRealNix(t *testing.T) {
	nixtest.Require(t)
	dir := t.TempDir()
	flake := `{
  outputs = { self }: let
    mk = name: script: builtins.derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; };
    lib = mk "warm-lib" "echo lib > $out";
  in { packages.x86_64-linux.app = mk "warm-app" "echo ${lib} > $out"; };
}`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &Nix{Args: []string{"--store", filepath.Join(dir, "store")}, Env: nixtest.Env("experimental-features = nix-command flakes")}
	ctx := context.Background()
	lock, err := n.Metadata(ctx, "path:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(lock.Revision(), "sha256-") || lock.LastModified.IsZero() {
		t.Errorf("lock = %+v", lock)
	}
	g, err := n.Derivations(ctx, "path:"+dir+"#app")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Drvs) != 2 || g.Drvs[g.Root].Name != "warm-app" || len(g.RootOutputs()) != 1 {
		t.Errorf("graph: root %s, %d derivations", g.Root, len(g.Drvs))
	}
	_, err = n.Derivations(ctx, "path:"+dir+"#nope")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "does not provide attribute") {
		t.Errorf("missing attribute: err = %v", err)
	}
}
