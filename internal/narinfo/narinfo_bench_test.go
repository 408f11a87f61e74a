package narinfo_test

import (
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// benchNarInfo is a narinfo as `nix copy` writes it, with references and a
// signature: the size of what the proxy parses on a miss and serves on a hit.
const benchNarInfo = `StorePath: /nix/store/pk98pfm6qjrkp089rmlcjaqgawcjvx3w-bench-root
URL: nar/0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0.nar.zst
Compression: zstd
FileHash: sha256:0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0
FileSize: 171
NarHash: sha256:0r6jvdwm70q4f7q72x8xxncy6r0irhac38hvja20qjspqg3sh0sk
NarSize: 264
References: 0ikp6gzgzzssxnl0zb5rxb9q716fqikl-bench-small-48 i4mckv57i95zdjcd5gasnmfbr9akhh0p-bench-small-0 y9jb0sihp0f4ngrips1bvd288y10iqd0-bench-image
Deriver: s20r96xrgvy7vjnx5nvmbwsb8fqyp3kr-bench-root.drv
Sig: bench-1:+ZBesoRXCfMn/PaZJ561/u/SGCKoIu//RtGWnJ4WcnvH2dqwPX6AuFb9DraikkxjROdOPor12Ipd5iAkfXp3CQ==
`

// The name checks run on every request before anything else: they must not
// allocate.

func BenchmarkValidHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !narinfo.ValidHash("pk98pfm6qjrkp089rmlcjaqgawcjvx3w") {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkValidNARName(b *testing.B) {
	for _, name := range []string{
		"0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0.nar",
		"0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0.nar.zst",
	} {
		b.Run(name[52:], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !narinfo.ValidNARName(name) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

func BenchmarkValidStorePathName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !narinfo.ValidStorePathName("s20r96xrgvy7vjnx5nvmbwsb8fqyp3kr-bench-root.drv") {
			b.Fatal("invalid")
		}
	}
}

// Parse and Marshal run once per narinfo admitted from an upstream (a
// miss), never on a hit: the store keeps the rendered text.

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := narinfo.Parse([]byte(benchNarInfo)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	ni, err := narinfo.Parse([]byte(benchNarInfo))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		narinfo.Marshal(ni)
	}
}
