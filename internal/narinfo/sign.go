package narinfo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// SecretKey is a signing key in Nix's format, "name:base64(64 bytes)", as
// `nix key generate-secret` writes it.
type SecretKey = signature.SecretKey

// GenerateKey makes a new key pair named name, the way
// `nix key generate-secret --key-name NAME` does.
func GenerateKey(name string) (SecretKey, PublicKey, error) {
	if name == "" || strings.ContainsAny(name, ": \t\n") {
		return SecretKey{}, PublicKey{}, fmt.Errorf("%w: key name %q must be non-empty, without ':' or spaces", ErrBadKey, name)
	}
	return signature.GenerateKeypair(name, rand.Reader)
}

// ParseSecretKey parses a secret key as Nix writes it.
func ParseSecretKey(s string) (SecretKey, error) {
	sk, err := signature.LoadSecretKey(strings.TrimSpace(s))
	if err != nil {
		return SecretKey{}, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return sk, nil
}

// LoadSecretKeyFile reads a secret key file (`nix key generate-secret`'s
// output, or `nix-cache-proxy keygen`'s).
func LoadSecretKeyFile(path string) (SecretKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SecretKey{}, err
	}
	return ParseSecretKey(string(b))
}

// Sign adds sk's signature to ni, replacing an older one by a key of the
// same name (a rotated key keeps its name). Other signatures are kept.
func Sign(ni *Info, sk SecretKey) error {
	sig, err := sk.Sign(nil, Fingerprint(ni))
	if err != nil {
		return fmt.Errorf("sign %s: %w", ni.StorePath, err)
	}
	kept := ni.Signatures[:0]
	for _, s := range ni.Signatures {
		if s.Name != sig.Name {
			kept = append(kept, s)
		}
	}
	ni.Signatures = append(kept, sig)
	return nil
}

// SignText returns text with sk's signature added when it carries a valid
// signature by one of trusted: the proxy vouches only for what it checked.
// Otherwise, and when it already carries a signature by sk's name or is
// not a narinfo this proxy can parse, it returns text itself.
func SignText(text []byte, sk SecretKey, trusted []PublicKey) []byte {
	name := sk.ToPublicKey().Name
	if bytes.Contains(text, []byte("\nSig: "+name+":")) {
		return text
	}
	ni, err := Parse(text)
	if err != nil || !SignedByOneOf(ni, trusted) || Sign(ni, sk) != nil {
		return text
	}
	return Marshal(ni)
}

// SignedBy reports whether ni carries a valid signature by pk.
func SignedBy(ni *Info, pk PublicKey) bool {
	fp := Fingerprint(ni)
	for _, s := range ni.Signatures {
		if s.Name == pk.Name && pk.Verify(fp, s) {
			return true
		}
	}
	return false
}
