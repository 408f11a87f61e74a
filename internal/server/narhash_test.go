package server_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// TestNARWithoutFileHash covers upstreams that publish no FileHash (attic,
// some S3 uploaders): the proxy checks the NAR inside a zstd file against
// NarHash and NarSize instead, and an uncompressed one directly.
func TestNARWithoutFileHash(t *testing.T) {
	nar := fakeupstream.RandomBytes(300_000)
	narSum := sha256.Sum256(nar)
	zst := zstdCompress(t, nar)
	other := zstdCompress(t, fakeupstream.RandomBytes(300_000))
	tests := []struct {
		name   string
		path   fakeupstream.Path
		wantOK bool
	}{
		{"zstd, right NAR inside", fakeupstream.Path{File: zst, Compression: "zstd", NarHash: narSum[:], NarSize: uint64(len(nar))}, true},
		{"zstd, another NAR inside", fakeupstream.Path{File: other, Compression: "zstd", NarHash: narSum[:], NarSize: uint64(len(nar))}, false},
		{"zstd, NarSize wrong", fakeupstream.Path{File: zst, Compression: "zstd", NarHash: narSum[:], NarSize: uint64(len(nar) + 1)}, false},
		{"zstd, not zstd at all", fakeupstream.Path{File: nar, Compression: "zstd", NarHash: narSum[:], NarSize: uint64(len(nar))}, false},
		{"none, right bytes", fakeupstream.Path{File: nar, Compression: "none"}, true},
		{"none, wrong bytes", fakeupstream.Path{File: other, Compression: "none", NarHash: narSum[:], NarSize: uint64(len(other))}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fu := fakeupstream.New(t)
			p := newProxy(t, config{ups: ups(fu)})
			tt.path.OmitFileHash = true
			it := fu.Add(tt.path)
			url := p.narURL(it.Hash)
			r := p.get(url)
			ok := r.status == http.StatusOK && r.readErr == nil && bytes.Equal(r.body, tt.path.File)
			if ok != tt.wantOK {
				t.Fatalf("GET: status %d, %d bytes, read error %v; want ok=%v", r.status, len(r.body), r.readErr, tt.wantOK)
			}
			// Kept only when it checked out: a second GET is a hit, or a
			// new download.
			p.get(url)
			wantFetches := 1
			if !tt.wantOK {
				wantFetches = 2
			}
			if n := fu.Count(it.NARPath); n != wantFetches {
				t.Errorf("upstream NAR requests %d, want %d", n, wantFetches)
			}
		})
	}
}

func zstdCompress(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(b, nil)
}
