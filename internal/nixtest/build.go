package nixtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ImageFile is the file inside Closure.Image that holds the random bytes.
const ImageFile = "disk.img"

// Closure is a set of store paths built by BuildClosure.
type Closure struct {
	Root  string   // store path of the top-level path
	Paths []string // every store path in the closure (Root and its references, transitively), sorted
	Image string   // store path of the big random "image" path, one of Paths
	Store string   // directory of the chroot store the paths were built in
}

// RealPath returns where storePath's contents live on disk: inside the
// chroot store, not under /nix/store.
func (c Closure) RealPath(storePath string) string {
	return filepath.Join(c.Store, storePath)
}

// Cache is a signed file:// binary cache written by `nix copy --to file://`.
type Cache struct {
	Dir           string // the cache's root directory (holds nix-cache-info)
	PublicKey     string // "name:base64", from nix key convert-secret-to-public
	SecretKeyFile string // the key the narinfos are signed with
}

// closureExpr builds six paths: a chain root → top → left → base, a diamond
// top → {left, right} → base, and root → image. base holds 108 KiB of text,
// past recompress.MinNAR, so the proxy recompresses it; the other small
// paths stay below. Every derivation carries
// the nonce, so each BuildClosure gets new store paths even on a machine that
// ran the tests before.
const closureExpr = `{ nonce, imageSize }:
let
  mk = name: script: builtins.derivation {
    name = "nixtest-${name}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    inherit nonce;
  };
in rec {
  base = mk "base" "echo base $nonce > $out; seq 1 20000 >> $out";
  left = mk "left" "echo left ${base} > $out";
  right = mk "right" "echo right ${base} > $out";
  top = mk "top" "echo top ${left} ${right} > $out";
  image = mk "image" "mkdir $out && head -c ${imageSize} /dev/urandom > $out/` + ImageFile + `";
  root = mk "root" "echo root ${top} ${image} > $out";
}
`

// BuildClosure builds a closure of five text paths (four of a few bytes,
// one of 108 KiB) and one path
// holding imageSize random bytes with real nix, then copies it into a new
// binary cache signed by a fresh key named test-cache-1. The small paths go
// in xz-compressed and the image and root zstd-compressed (xz takes about
// 40 s for 64 MiB of random data), so a reader of the cache sees both.
func BuildClosure(t testing.TB, imageSize int64) (Closure, Cache) {
	t.Helper()
	env := Env()
	dir := tempDir(t)
	expr := filepath.Join(dir, "closure.nix")
	if err := os.WriteFile(expr, []byte(closureExpr), 0o644); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	c := Closure{Store: filepath.Join(dir, "store")}
	out := mustNix(t, env, "build", "--store", c.Store, "--no-link", "--json",
		"-f", expr, "--argstr", "nonce", hex.EncodeToString(nonce),
		"--argstr", "imageSize", fmt.Sprint(imageSize), "root", "image", "top")
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &built); err != nil || len(built) != 3 {
		t.Fatalf("nix build --json: %v: %s", err, out)
	}
	// nix does not keep the installables' order in its output.
	var top string
	for _, b := range built {
		switch p := b.Outputs["out"]; {
		case strings.HasSuffix(p, "-nixtest-root"):
			c.Root = p
		case strings.HasSuffix(p, "-nixtest-image"):
			c.Image = p
		case strings.HasSuffix(p, "-nixtest-top"):
			top = p
		}
	}
	if c.Root == "" || c.Image == "" || top == "" {
		t.Fatalf("nix build --json: missing outputs: %s", out)
	}
	c.Paths = strings.Fields(string(mustNix(t, env, "path-info", "--store", c.Store, "-r", c.Root)))
	slices.Sort(c.Paths)

	secret, public := NewKey(t, "test-cache-1")
	cache := Cache{Dir: filepath.Join(dir, "cache"), PublicKey: public, SecretKeyFile: secret}
	copyTo(t, c.Store, cache, "xz", top)
	copyTo(t, c.Store, cache, "zstd", c.Root)
	return c, cache
}

// AddToCache copies the closure cl into an existing cache, signed with the
// cache's key: an upstream that gained paths after the proxy first saw it.
func AddToCache(t testing.TB, cache Cache, cl Closure) {
	t.Helper()
	copyTo(t, cl.Store, cache, "zstd", cl.Root)
}

// copyTo copies path's closure from the chroot store into cache. Paths the
// cache already holds are skipped, keeping their compression.
func copyTo(t testing.TB, store string, cache Cache, compression, path string) {
	t.Helper()
	to := fmt.Sprintf("file://%s?compression=%s&secret-key=%s", cache.Dir, compression, cache.SecretKeyFile)
	mustNix(t, Env(), "copy", "--store", store, "--to", to, path)
}

// NewKey makes a signing key pair with `nix key generate-secret` and returns
// the secret key's file and the public key ("name:base64").
func NewKey(t testing.TB, name string) (secretFile, publicKey string) {
	t.Helper()
	secret := mustNix(t, Env(), "key", "generate-secret", "--key-name", name)
	secretFile = filepath.Join(tempDir(t), name+".secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	public, err := nixStdin(t, Env(), secret, "key", "convert-secret-to-public")
	if err != nil {
		t.Fatal(err)
	}
	return secretFile, strings.TrimSpace(string(public))
}
