package nixtest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FlakeConfig is the nix.conf for a nix that evaluates flakes into the
// chroot store at store by default: what a proxy that follows a flake
// (and the commands that evaluate one) get as NIX_CONFIG in tests.
func FlakeConfig(store string) string {
	return baseConfig + "experimental-features = nix-command flakes\nstore = " + store + "\n"
}

// flakeEnv is Env with flakes turned on.
func flakeEnv() []string {
	return Env("experimental-features = nix-command flakes")
}

// BuildFlake builds installables (FLAKEREF#ATTR) into the chroot store at
// store and returns their "out" paths, sorted: nix does not print them in
// the installables' order.
func BuildFlake(t testing.TB, store string, installables ...string) []string {
	t.Helper()
	out := mustNix(t, flakeEnv(), append([]string{"build", "--store", store, "--no-link", "--json"}, installables...)...)
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &built); err != nil || len(built) != len(installables) {
		t.Fatalf("nix build --json: %v: %s", err, out)
	}
	paths := make([]string, len(built))
	for i, b := range built {
		paths[i] = b.Outputs["out"]
	}
	slices.Sort(paths)
	return paths
}

// NewCache returns an empty signed file:// cache under a new temporary
// directory (nix copy creates it), with a fresh key named name.
func NewCache(t testing.TB, name string) Cache {
	t.Helper()
	secret, public := NewKey(t, name)
	return Cache{Dir: filepath.Join(tempDir(t), "cache"), PublicKey: public, SecretKeyFile: secret}
}

// CopyPaths copies paths' closures from the chroot store at store into
// cache, zstd-compressed and signed with its key.
func CopyPaths(t testing.TB, store string, cache Cache, paths ...string) {
	t.Helper()
	to := fmt.Sprintf("file://%s?compression=zstd&secret-key=%s", cache.Dir, cache.SecretKeyFile)
	mustNix(t, Env(), append([]string{"copy", "--store", store, "--to", to}, paths...)...)
}

// ClosureOf lists the runtime closure of paths in the chroot store at store,
// sorted.
func ClosureOf(t testing.TB, store string, paths ...string) []string {
	t.Helper()
	out := mustNix(t, Env(), append([]string{"path-info", "--store", store, "-r"}, paths...)...)
	closure := strings.Fields(string(out))
	slices.Sort(closure)
	return closure
}
