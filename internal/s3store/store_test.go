package s3store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// node opens a store with its own index over the shared bucket, as one
// proxy of a fleet does.
func node(t *testing.T, srv *s3test.Server, bucket string) *store.Store {
	t.Helper()
	b := openBucket(t, srv, bucket)
	s, err := store.OpenWith(filepath.Join(t.TempDir(), "cache"), store.Options{Files: b, Shared: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const (
	testHash = "0a7pk4mbpy4ra4dsyyk2hcm0cbp5fiz9"
	testNAR  = "1b1z5aldkr6cb7n4mm2jx1svmy2l4g0j4gl2hfhdb2nwsawwq4nr.nar"
)

var testNarInfo = []byte("StorePath: /nix/store/" + testHash + "-hello\nURL: nar/" + testNAR +
	"\nCompression: none\nNarHash: sha256:1b1z5aldkr6cb7n4mm2jx1svmy2l4g0j4gl2hfhdb2nwsawwq4nr\nNarSize: 5\n")

// TestStoresShareABucket: what node A stores, node B (empty index) finds;
// the narinfo is published only once its NAR is in the bucket.
func TestStoresShareABucket(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	a, b := node(t, srv, bucket), node(t, srv, bucket)
	ctx := context.Background()
	src := store.NARSource{Hash: testHash, StorePath: "/nix/store/" + testHash + "-hello", Upstream: "http://up", URL: "http://up/nar/x", Size: 5}
	if err := a.PutNarInfo(ctx, testHash, testNarInfo, testNAR, src); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SharedNarInfo(ctx, testHash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("B found the narinfo before its NAR was stored: %v", err)
	}
	// B can fill it itself meanwhile: it knows where the NAR comes from.
	if got, err := b.NARSource(ctx, testNAR); err != nil || got.URL != src.URL {
		t.Fatalf("B's NARSource = %+v, %v; want A's", got, err)
	}
	w, err := a.CreateNAR(ctx, testNAR)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	text, err := b.SharedNarInfo(ctx, testHash)
	if err != nil || string(text) != string(testNarInfo) {
		t.Fatalf("B's SharedNarInfo = %q, %v", text, err)
	}
	if text, err := b.NarInfo(ctx, testHash); err != nil || string(text) != string(testNarInfo) {
		t.Fatalf("after the import, B's own index has %q, %v", text, err)
	}
	f, err := b.OpenNAR(ctx, testNAR)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "hello" {
		t.Errorf("B read %q", got)
	}
	if ok, err := b.HasNAR(ctx, testNAR); !ok || err != nil {
		t.Errorf("B's HasNAR = %v, %v", ok, err)
	}
}

// TestUnclaimedUploadClaimedElsewhere: node A drops an upload no narinfo
// claimed on A, but B had the same NAR claimed: the shared file stays.
func TestUnclaimedUploadClaimedElsewhere(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	a, b := node(t, srv, bucket), node(t, srv, bucket)
	ctx := context.Background()
	for _, s := range []*store.Store{a, b} {
		w, err := s.CreateNAR(ctx, testNAR)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("hello"))
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.PutUpload(ctx, testNAR, store.Upload{Compression: "none", FileSize: 5, Received: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	src := store.NARSource{Hash: testHash, Upstream: store.UploadedUpstream, Size: 5}
	if err := b.ClaimUpload(ctx, testHash, testNarInfo, testNAR, src); err != nil {
		t.Fatal(err)
	}
	if err := a.DropUnclaimedUpload(ctx, testNAR); err != nil {
		t.Fatal(err)
	}
	f, err := b.OpenNAR(ctx, testNAR)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		t.Fatal("A's sweep deleted the NAR B's narinfo names")
	}
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := node(t, srv, bucket)
	if _, err := c.SharedNarInfo(ctx, testHash); err != nil {
		t.Errorf("a third node does not see the claimed upload: %v", err)
	}
}
