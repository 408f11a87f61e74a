package narinfo_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

const signTestInfo = `StorePath: /nix/store/0kdzrs8ny0y8dnbv9vxg0q6rl9xk8flb-hello
URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz
Compression: xz
NarHash: sha256:1bc0p6c9yhbqm8dsvvvz7xq5q5r1gvxv4lz7rcd4p5qd7kcgc5gp
NarSize: 226552
References: 0kdzrs8ny0y8dnbv9vxg0q6rl9xk8flb-hello 7gx4kiv5m0i7d7qkixq2cwzbr10lvxwc-glibc
Sig: cache.nixos.org-1:dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy00==
`

func TestSignAndVerify(t *testing.T) {
	sk, pk, err := narinfo.GenerateKey("cache.lan-1")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(signTestInfo, "Sig: cache.nixos.org-1:dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy00==\n", "", 1)
	ni, err := narinfo.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if narinfo.SignedBy(ni, pk) {
		t.Fatal("unsigned narinfo reported as signed")
	}
	if err := narinfo.Sign(ni, sk); err != nil {
		t.Fatal(err)
	}
	if err := narinfo.Sign(ni, sk); err != nil { // again: replaces, never duplicates
		t.Fatal(err)
	}
	if len(ni.Signatures) != 1 || !narinfo.SignedBy(ni, pk) {
		t.Fatalf("signatures %v, want one valid by %s", ni.Signatures, pk.Name)
	}
	// The text round-trips, and a secret key read back from its text signs alike.
	back, err := narinfo.Parse(narinfo.Marshal(ni))
	if err != nil || narinfo.Verify(back, []narinfo.PublicKey{pk}) != nil {
		t.Fatalf("re-parsed narinfo does not verify: %v", err)
	}
	sk2, err := narinfo.ParseSecretKey(sk.String() + "\n")
	if err != nil || sk2.ToPublicKey().String() != pk.String() {
		t.Fatalf("secret key round trip: %v", err)
	}
	// Any signed field changed breaks it.
	back.NarSize++
	if narinfo.SignedBy(back, pk) {
		t.Fatal("signature still verifies after NarSize changed")
	}
}

func TestBadKeys(t *testing.T) {
	for _, s := range []string{"", "name", "name:", "name:bm90IGEga2V5", "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="} {
		if _, err := narinfo.ParseSecretKey(s); !errors.Is(err, narinfo.ErrBadKey) {
			t.Errorf("ParseSecretKey(%q) = %v, want ErrBadKey", s, err)
		}
	}
	for _, name := range []string{"", "a:b", "a b"} {
		if _, _, err := narinfo.GenerateKey(name); !errors.Is(err, narinfo.ErrBadKey) {
			t.Errorf("GenerateKey(%q) = %v, want ErrBadKey", name, err)
		}
	}
}

// TestSignText: the proxy's signature goes only on a narinfo that carries
// a valid signature by a trusted key; one kept unchecked, or on its CA
// field's word alone, is left as it is.
func TestSignText(t *testing.T) {
	sk, pk, _ := narinfo.GenerateKey("cache.lan-1")
	upSK, upPK, _ := narinfo.GenerateKey("up-1")
	otherSK, _, _ := narinfo.GenerateKey("other-1")
	unsigned := strings.Replace(signTestInfo, "Sig: cache.nixos.org-1:dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy0dummy00==\n", "", 1)
	signedWith := func(text string, k narinfo.SecretKey) []byte {
		ni, err := narinfo.Parse([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if err := narinfo.Sign(ni, k); err != nil {
			t.Fatal(err)
		}
		return narinfo.Marshal(ni)
	}
	trusted := []narinfo.PublicKey{upPK}
	tests := []struct {
		name     string
		text     []byte
		wantSign bool
	}{
		{"signed by a trusted key", signedWith(unsigned, upSK), true},
		{"unsigned", []byte(unsigned), false},
		{"signed by an untrusted key", signedWith(unsigned, otherSK), false},
		{"content-addressed, unsigned", []byte(unsigned + "CA: fixed:r:sha256:1bc0p6c9yhbqm8dsvvvz7xq5q5r1gvxv4lz7rcd4p5qd7kcgc5gp\n"), false},
		{"signed by the proxy already", signedWith(unsigned, sk), false},
		{"not a narinfo", []byte("not a narinfo"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := narinfo.SignText(tt.text, sk, trusted)
			if !tt.wantSign {
				if &got[0] != &tt.text[0] {
					t.Errorf("SignText changed the text:\n%s", got)
				}
				return
			}
			ni, err := narinfo.Parse(got)
			if err != nil || !narinfo.SignedBy(ni, pk) || !narinfo.SignedBy(ni, upPK) {
				t.Fatalf("SignText did not add the proxy's signature next to the upstream's: %v\n%s", err, got)
			}
			if again := narinfo.SignText(got, sk, trusted); &again[0] != &got[0] {
				t.Error("SignText re-signed a narinfo it had signed")
			}
		})
	}
}
