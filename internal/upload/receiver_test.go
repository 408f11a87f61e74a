package upload_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// noPaths has no path at all: no reference can be served.
type noPaths struct{}

func (noPaths) Lookup(context.Context, string) (cache.Entry, error) {
	return cache.Entry{}, cache.ErrNotFound
}
func (noPaths) Stored(string) {}

func narName(file []byte) string {
	sum := sha256.Sum256(file)
	return nixbase32.EncodeToString(sum[:]) + ".nar"
}

// TestUnclaimedNARIsDropped: a NAR whose narinfo never comes (the `nix copy`
// died in between) is dropped after UnclaimedTTL, file and row; before that
// it is kept, and it survives a restart of the store.
func TestUnclaimedNARIsDropped(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	r, err := upload.New(upload.Options{Store: st, Paths: noPaths{}, UnclaimedTTL: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	file := bytes.Repeat([]byte("nar"), 1000)
	name := narName(file)
	if _, _, err := r.PutNAR(t.Context(), name, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.HasNAR(t.Context(), name); !ok {
		t.Fatal("uploaded NAR not on disk")
	}
	u, err := st.UploadOf(t.Context(), name)
	if err != nil || u.FileSize != int64(len(file)) || u.NarSize != int64(len(file)) {
		t.Fatalf("upload row %+v, %v", u, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, _ := st.HasNAR(t.Context(), name)
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unclaimed NAR still there 10 s after its TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Close()
	if _, err := st.UploadOf(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("upload row after the sweep: %v", err)
	}
	if s, _ := st.Stats(t.Context()); s.NARs != 0 || s.NARBytes != 0 {
		t.Fatalf("store totals after the sweep: %+v", s)
	}
}

// TestClaimedNARStays: a NAR named by an uploaded narinfo is no longer
// swept, however old.
func TestClaimedNARStays(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	file := []byte("claimed")
	name := narName(file)
	w, err := st.CreateNAR(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(file)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := st.PutUpload(t.Context(), name, store.Upload{Compression: "none", FileSize: 7, Received: old}); err != nil {
		t.Fatal(err)
	}
	hash := "0kdzrs8ny0y8dnbv9vxg0q6rl9xk8flb"
	if err := st.ClaimUpload(t.Context(), hash, []byte("StorePath: x\n"), name, store.NARSource{Hash: hash}); err != nil {
		t.Fatal(err)
	}
	names, err := st.UnclaimedUploads(t.Context(), time.Now())
	if err != nil || len(names) != 0 {
		t.Fatalf("unclaimed after the claim: %v %v", names, err)
	}
	if err := st.DropUnclaimedUpload(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.HasNAR(t.Context(), name); !ok {
		t.Fatal("a claimed NAR was dropped")
	}
	src, err := st.NARSource(t.Context(), name)
	if err != nil || src.Refillable() {
		t.Fatalf("uploaded NAR's source %+v (%v) must not be refillable", src, err)
	}
}
