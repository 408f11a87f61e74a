package verify_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// TestDeep builds, per compression, a NAR file whose FileHash and FileSize
// were rewritten to match corrupt bytes (so size and FileHash pass) but
// whose NAR inside is not NarHash: only --deep sees it. A narinfo without
// FileHash gets the NarHash check without --deep.
func TestDeep(t *testing.T) {
	nar := fixture(t, "sample.nar")
	tests := []struct {
		name, compression, file string
		omitFileHash            bool
	}{
		{"none", "none", "sample.nar", false},
		{"zstd", "zstd", "sample.nar.zst", false},
		{"xz", "xz", "sample.nar.xz", false},
		{"bzip2", "bzip2", "sample.nar.bz2", false},
		{"no FileHash, xz", "xz", "sample.nar.xz", true},
		{"no FileHash, bzip2", "bzip2", "sample.nar.bz2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			narSum := sha256.Sum256(nar)
			it, name := e.fill(t, fakeupstream.Path{File: fixture(t, tt.file), Compression: tt.compression,
				NarHash: narSum[:], NarSize: uint64(len(nar)), OmitFileHash: tt.omitFileHash})
			e.fill(t, fakeupstream.Path{Name: "bystander", File: fixture(t, tt.file)[:100], Compression: "br"})
			if st := e.run(t, verify.Request{Deep: true}); !st.Sound() || st.ProblemsTotal != 0 {
				t.Fatalf("deep pass over a sound cache: %+v", st)
			}

			// Corrupt the file, keeping it a committed, indexed file whose
			// FileHash and FileSize match it.
			bad := bytes.Clone(it.File)
			bad[len(bad)/2] ^= 0x10
			w, err := e.Store.CreateNAR(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(bad)
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			src, err := e.Store.NARSource(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			orig := src
			if src.SHA256 != nil {
				sum := sha256.Sum256(bad)
				src.SHA256, src.Size = sum[:], int64(len(bad))
			}
			text, err := e.Store.NarInfo(ctx, it.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Store.PutNarInfo(ctx, it.Hash, text, name, src); err != nil {
				t.Fatal(err)
			}

			shallow := e.run(t, verify.Request{})
			if tt.omitFileHash {
				if diff := cmp.Diff(map[string]string{name: verify.KindNAR}, kinds(shallow)); diff != "" {
					t.Errorf("without FileHash, a shallow pass (-want +got):\n%s", diff)
				}
			} else if shallow.ProblemsTotal != 0 {
				t.Errorf("a shallow pass saw what only NarHash shows: %+v", shallow.Problems)
			}
			deep := e.run(t, verify.Request{Deep: true, Repair: true})
			if diff := cmp.Diff(map[string]string{name: verify.KindNAR}, kinds(deep)); diff != "" {
				t.Fatalf("deep pass (-want +got):\n%s\n%+v", diff, deep.Problems)
			}
			if deep.NotDeep != 1 {
				t.Errorf("NotDeep = %d, want 1 (the br bystander)", deep.NotDeep)
			}
			if !deep.Sound() {
				t.Errorf("deep repair pass not sound: %+v", deep)
			}
			// The refetch is checked against the source row: put the true
			// FileHash back, as the upstream's narinfo has it.
			if err := e.Store.PutNarInfo(ctx, it.Hash, text, name, orig); err != nil {
				t.Fatal(err)
			}
			if got := e.get(t, "/nar/"+name); !bytes.Equal(got, it.File) {
				t.Errorf("after repair: %d bytes, not the upstream's %d", len(got), len(it.File))
			}
		})
	}
}

// fixture reads a file of testdata/: sample.nar and its .xz, .bz2 and .zst
// as the xz, bzip2 and zstd tools wrote them.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
