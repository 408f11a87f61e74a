package nixtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CopyFrom runs `nix copy --from url` of paths into a new, empty chroot
// store, as a client that trusts only publicKey and requires signatures.
// It returns the store's directory, nix's combined output and its error;
// a failed copy does not fail t, so tests can expect failures.
//
// Each call gets its own XDG_CACHE_HOME: nix remembers narinfos and
// nix-cache-info per cache URL on disk, and a second copy from the same URL
// must ask the server again rather than trust that memory.
func CopyFrom(t testing.TB, url, publicKey string, paths ...string) (storeDir string, out []byte, err error) {
	t.Helper()
	dir := tempDir(t)
	storeDir = filepath.Join(dir, "store")
	ctx, cancel := context.WithTimeout(t.Context(), cmdTimeout)
	defer cancel()
	args := append([]string{"copy", "--from", url, "--to", storeDir}, paths...)
	cmd := exec.CommandContext(ctx, "nix", args...)
	cmd.Env = append(Env(
		"trusted-public-keys = "+publicKey,
		"require-sigs = true",
	), "XDG_CACHE_HOME="+filepath.Join(dir, "xdg-cache"))
	out, err = cmd.CombinedOutput()
	return storeDir, out, err
}

// VerifyCopy checks that every path of c is valid in the chroot store at
// storeDir with the NAR hash it has in c's own store, and that the image
// file's bytes are the ones BuildClosure wrote.
func VerifyCopy(t testing.TB, storeDir string, c Closure) {
	t.Helper()
	want := narHashes(t, c.Store, c.Paths)
	got := narHashes(t, storeDir, c.Paths)
	for _, p := range c.Paths {
		if got[p] != want[p] {
			t.Errorf("%s: narHash %q in %s, want %q", p, got[p], storeDir, want[p])
		}
	}
	img := filepath.Join(c.Image, ImageFile)
	if g, w := fileSHA256(t, filepath.Join(storeDir, img)), fileSHA256(t, c.RealPath(img)); !bytes.Equal(g, w) {
		t.Errorf("%s: sha256 %x in %s, want %x", img, g, storeDir, w)
	}
}

// narHashes returns the narHash of each of paths in store; nix path-info
// fails, and so does t, when any of them is not valid there.
func narHashes(t testing.TB, store string, paths []string) map[string]string {
	t.Helper()
	args := append([]string{"path-info", "--json", "--store", store}, paths...)
	out := mustNix(t, Env(), args...)
	var infos []struct {
		Path    string `json:"path"`
		NarHash string `json:"narHash"`
		Valid   *bool  `json:"valid"`
	}
	if err := json.Unmarshal(out, &infos); err != nil {
		t.Fatalf("nix path-info --json: %v: %s", err, out)
	}
	m := make(map[string]string, len(infos))
	for _, i := range infos {
		if i.Valid != nil && !*i.Valid {
			t.Errorf("%s is not valid in %s", i.Path, store)
			continue
		}
		m[i.Path] = i.NarHash
	}
	return m
}

func fileSHA256(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}
