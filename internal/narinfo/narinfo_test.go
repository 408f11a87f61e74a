package narinfo

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// A narinfo as cache.nixos.org serves it.
const hello = `StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1
URL: nar/0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar.xz
Compression: xz
FileHash: sha256:0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4
FileSize: 50184
NarHash: sha256:1l0s3y4nj8qhgzpb3wrb2w3fi6w1ms58a4aylwsp1ykbk60hd1c6
NarSize: 226552
References: 7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1 s5xbd3nrlvdkcxgmql2ffwlqdd93dkrg-glibc-2.37-8
Deriver: 5j9bxnh0wxwg4i8srkgk36kapgpiv2rn-hello-2.12.1.drv
Sig: cache.nixos.org-1:uYZlKMBwCR6j+jEsuh0kjuKmKHlJ1mDc/Ptn6Xj8Iy+5iLUaQNpHDnMWNfjBp8RjK9idlb3XgFKmM4BmuR6EDg==
`

func TestParseTolerant(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, ni *Info)
		wantErr bool
	}{
		{name: "nixos", in: hello, check: func(t *testing.T, ni *Info) {
			if ni.FileSize != 50184 || ni.NarSize != 226552 || len(ni.References) != 2 || len(ni.Signatures) != 1 {
				t.Errorf("parsed %+v", ni)
			}
		}},
		{name: "unknown keys ignored", in: hello + "Frobnicate: yes\nX-Attic: 1\n", check: func(t *testing.T, ni *Info) {
			if ni.StorePath == "" {
				t.Error("no StorePath")
			}
		}},
		{name: "missing compression is bzip2", in: strings.Replace(hello, "Compression: xz\n", "", 1), check: func(t *testing.T, ni *Info) {
			if ni.Compression != "bzip2" {
				t.Errorf("Compression = %q", ni.Compression)
			}
		}},
		{name: "no FileHash FileSize", in: strings.NewReplacer(
			"FileHash: sha256:0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4\n", "",
			"FileSize: 50184\n", "").Replace(hello), check: func(t *testing.T, ni *Info) {
			if ni.FileHash != nil || ni.FileSize != 0 {
				t.Errorf("FileHash %v FileSize %d", ni.FileHash, ni.FileSize)
			}
		}},
		{name: "empty references", in: strings.Replace(hello, "References: 7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1 s5xbd3nrlvdkcxgmql2ffwlqdd93dkrg-glibc-2.37-8", "References: ", 1), check: func(t *testing.T, ni *Info) {
			if len(ni.References) != 0 {
				t.Errorf("References %q", ni.References)
			}
		}},
		{name: "CRLF", in: strings.ReplaceAll(hello, "\n", "\r\n"), check: func(t *testing.T, ni *Info) {
			if ni.Compression != "xz" {
				t.Errorf("Compression %q", ni.Compression)
			}
		}},
		{name: "no StorePath", in: strings.Replace(hello, "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1\n", "", 1), wantErr: true},
		{name: "no URL", in: strings.Replace(hello, "URL: nar/0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar.xz\n", "", 1), wantErr: true},
		{name: "no NarSize", in: strings.Replace(hello, "NarSize: 226552\n", "", 1), wantErr: true},
		{name: "bad NarSize", in: strings.Replace(hello, "NarSize: 226552", "NarSize: lots", 1), wantErr: true},
		{name: "bad hash", in: strings.Replace(hello, "NarHash: sha256:1l0s", "NarHash: sha256:!!0s", 1), wantErr: true},
		{name: "other store dir", in: strings.Replace(hello, "/nix/store/7h7", "/gnu/store/7h7", 1), wantErr: true},
		{name: "line without colon", in: hello + "garbage\n", wantErr: true},
		{name: "bad signature", in: hello + "Sig: nokey\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ni, err := Parse([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, ni)
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	ni, err := Parse([]byte(hello))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(hello, string(Marshal(ni))); diff != "" {
		t.Errorf("Marshal(Parse(x)) != x (-want +got):\n%s", diff)
	}
}

func TestMarshalNoReferences(t *testing.T) {
	ni, err := Parse([]byte(hello))
	if err != nil {
		t.Fatal(err)
	}
	ni.References = nil
	if out := string(Marshal(ni)); !strings.Contains(out, "\nReferences: \nDeriver: ") {
		t.Errorf("Marshal wrote no \"References: \" line:\n%s", out)
	}
}

func TestVerify(t *testing.T) {
	sk, pk, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPK, _ := signature.GenerateKeypair("test-1", rand.Reader)
	_, otherNamePK, _ := signature.GenerateKeypair("test-2", rand.Reader)
	signed := func(mutate func(*Info)) *Info {
		ni, err := Parse([]byte(hello))
		if err != nil {
			t.Fatal(err)
		}
		ni.Signatures = nil
		// Sign with references in reverse order: the fingerprint sorts them.
		ni.References = []string{ni.References[1], ni.References[0]}
		sig, err := sk.Sign(rand.Reader, Fingerprint(ni))
		if err != nil {
			t.Fatal(err)
		}
		ni.Signatures = append(ni.Signatures, sig)
		if mutate != nil {
			mutate(ni)
		}
		return ni
	}
	tests := []struct {
		name string
		ni   *Info
		keys []PublicKey
		ok   bool
	}{
		{"valid", signed(nil), []PublicKey{pk}, true},
		{"valid among other keys", signed(nil), []PublicKey{otherNamePK, pk}, true},
		{"URL and FileHash are not signed", signed(func(ni *Info) { ni.URL = "nar/x.nar"; ni.FileSize = 1; ni.Compression = "none" }), []PublicKey{pk}, true},
		{"wrong key same name", signed(nil), []PublicKey{otherPK}, false},
		{"no matching name", signed(nil), []PublicKey{otherNamePK}, false},
		{"NarSize tampered", signed(func(ni *Info) { ni.NarSize++ }), []PublicKey{pk}, false},
		{"reference added", signed(func(ni *Info) { ni.References = append(ni.References, "00000000000000000000000000000000-x") }), []PublicKey{pk}, false},
		{"unsigned", signed(func(ni *Info) { ni.Signatures = nil }), []PublicKey{pk}, false},
		{"unsigned content-addressed", signed(func(ni *Info) {
			ni.Signatures = nil
			ni.CA = "fixed:r:sha256:1l0s3y4nj8qhgzpb3wrb2w3fi6w1ms58a4aylwsp1ykbk60hd1c6"
		}), []PublicKey{pk}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.ni, tt.keys)
			if tt.ok && err != nil {
				t.Errorf("Verify = %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrUntrusted) {
				t.Errorf("Verify = %v, want ErrUntrusted", err)
			}
		})
	}
}

func TestNARName(t *testing.T) {
	ni, err := Parse([]byte(hello))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := NARName(ni), "0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar.xz"; got != want {
		t.Errorf("NARName = %q, want %q", got, want)
	}
	ni.FileHash = nil
	ni.Compression = "zstd"
	if got, want := NARName(ni), "1l0s3y4nj8qhgzpb3wrb2w3fi6w1ms58a4aylwsp1ykbk60hd1c6.nar.zst"; got != want {
		t.Errorf("NARName without FileHash = %q, want %q", got, want)
	}
	if !ValidNARName(NARName(ni)) {
		t.Error("NARName is not a ValidNARName")
	}
}

func TestNames(t *testing.T) {
	h := "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"
	n := "0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4"
	tests := []struct {
		fn   func(string) bool
		in   string
		want bool
	}{
		{ValidHash, h, true},
		{ValidHash, h[:31], false},
		{ValidHash, h + "a", false},
		{ValidHash, "e" + h[1:], false},
		{ValidHash, "o" + h[1:], false},
		{ValidHash, "t" + h[1:], false},
		{ValidHash, "u" + h[1:], false},
		{ValidHash, strings.ToUpper(h), false},
		{ValidNARName, n + ".nar", true},
		{ValidNARName, n + ".nar.xz", true},
		{ValidNARName, n + ".nar.zst", true},
		{ValidNARName, n + ".nar.bz2", true},
		{ValidNARName, n + ".nar.br", true},
		{ValidNARName, n + ".nar.lzma", true},
		{ValidNARName, n + ".nar.lz4", true},
		{ValidNARName, n + ".nar.exe", false},
		{ValidNARName, n + ".narx", false},
		{ValidNARName, n[:51] + ".nar", false},
		{ValidNARName, "../" + n[3:] + ".nar", false},
		{ValidNARName, n, false},
		{ValidStorePathName, h + "-hello-2.12.1.drv", true},
		{ValidStorePathName, h + "-", false},
		{ValidStorePathName, h + "-.hidden", false},
		{ValidStorePathName, h + "-a/b", false},
		{ValidStorePathName, h + "-a b", false},
		{ValidStorePathName, h, false},
	}
	for _, tt := range tests {
		if got := tt.fn(tt.in); got != tt.want {
			t.Errorf("validating %q = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := HashOfStorePath("/nix/store/" + h + "-hello"); got != h {
		t.Errorf("HashOfStorePath = %q", got)
	}
	if got := HashOfStorePath(h + "-hello"); got != h {
		t.Errorf("HashOfStorePath(base name) = %q", got)
	}
	if got := HashOfStorePath("/gnu/store/" + h + "-hello"); got != "" {
		t.Errorf("HashOfStorePath(other store) = %q", got)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives Marshal and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(hello))
	f.Add([]byte(strings.Replace(hello, "Compression: xz\n", "", 1)))
	f.Add([]byte("StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-x\nURL: a\nNarHash: sha256:1l0s3y4nj8qhgzpb3wrb2w3fi6w1ms58a4aylwsp1ykbk60hd1c6\nNarSize: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ni, err := Parse(data)
		if err != nil {
			return
		}
		out := Marshal(ni)
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(x)) failed: %v\n%s", err, out)
		}
		if diff := cmp.Diff(string(out), string(Marshal(again))); diff != "" {
			t.Fatalf("not stable through a round trip:\n%s", diff)
		}
	})
}

// TestNARExtensionsValid keeps ValidNARName's suffix list and the
// Compression table in step: every name this proxy hands out must pass.
func TestNARExtensionsValid(t *testing.T) {
	n := "0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar"
	for c, ext := range narExtensions {
		if !ValidNARName(n + ext) {
			t.Errorf("Compression %s: %q is not a valid NAR name", c, n+ext)
		}
	}
}
