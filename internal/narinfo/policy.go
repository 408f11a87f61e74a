package narinfo

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// PublicKey is a trusted signing key, "name:base64".
type PublicKey = signature.PublicKey

// ParsePublicKey parses a key as written in Nix's trusted-public-keys.
func ParsePublicKey(s string) (PublicKey, error) {
	return signature.ParsePublicKey(strings.TrimSpace(s))
}

// Fingerprint is the text Nix signs: 1;StorePath;NarHash;NarSize;refs, with
// references as full paths, sorted, comma-joined.
func Fingerprint(ni *Info) string {
	refs := make([]string, len(ni.References))
	for i, r := range ni.References {
		refs[i] = StoreDir + "/" + r
	}
	slices.Sort(refs)
	return "1;" + ni.StorePath + ";" + ni.NarHash.Format(nixhash.NixBase32, true) + ";" +
		strconv.FormatUint(ni.NarSize, 10) + ";" + strings.Join(refs, ",")
}

// Verify returns nil when any signature on ni verifies against any of keys,
// or when ni is content-addressed (Nix checks CA paths by their hash, not a
// signature, and so does the client that receives it); else ErrUntrusted.
func Verify(ni *Info, keys []PublicKey) error {
	if ni.CA != "" || SignedByOneOf(ni, keys) {
		return nil
	}
	names := make([]string, len(ni.Signatures))
	for i, s := range ni.Signatures {
		names[i] = s.Name
	}
	return fmt.Errorf("%w (signed by %q)", ErrUntrusted, names)
}

// SignedByOneOf reports whether a signature on ni verifies against one of
// keys. Unlike Verify it does not take a CA field's word: this is what
// the proxy's own signature may vouch for, since a client accepts a
// narinfo signed by a key it trusts even when its CA does not hold.
func SignedByOneOf(ni *Info, keys []PublicKey) bool {
	fp := []byte(Fingerprint(ni))
	for _, sig := range ni.Signatures {
		for _, k := range keys {
			if k.Name == sig.Name && ed25519.Verify(k.Data, fp, sig.Data) {
				return true
			}
		}
	}
	return false
}

// NARName is the stable name this proxy gives ni's NAR file:
// "<sha256 of the file, nix32>.nar<ext>". The digest is FileHash, or NarHash
// when FileHash is absent (then the file is named for its content anyway). It
// returns "" when neither is a sha256, which this proxy cannot name.
func NARName(ni *Info) string {
	h := ni.FileHash
	if h == nil || h.Algo() != nixhash.SHA256 {
		h = ni.NarHash
	}
	if h == nil || h.Algo() != nixhash.SHA256 {
		return ""
	}
	return nixbase32.EncodeToString(h.Digest()) + ".nar" + NARExtension(ni.Compression)
}
