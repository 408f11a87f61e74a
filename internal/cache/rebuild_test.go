package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/recompress"
)

// An evicted zstd file whose original is gone too is rebuilt from the
// original as it comes back from the upstream, and streamed to the client
// meanwhile: the client has zstd bytes while the upstream is still
// sending the original, and gets the very bytes its narinfo's FileHash
// names.
func TestRecompressRebuildStreams(t *testing.T) {
	e := newZstdEnv(t)
	ctx := context.Background()
	it, orig, zname, first := e.recompressed(t, fakeupstream.RandomBytes(2<<20)) // incompressible: zstd bytes come as the xz ones do
	ni := e.narinfo(t, it.Hash)
	waitGone(t, e.st, orig)
	if _, err := e.st.EvictNARs(ctx, []string{zname}); err != nil {
		t.Fatal(err)
	}

	held, hold := make(chan struct{}, 1), make(chan struct{})
	e.up.SetFault(it.NARPath, fakeupstream.Fault{HoldAt: len(it.File) / 2, Hold: func() {
		held <- struct{}{}
		<-hold
	}})
	defer func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	}()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.c.ServeNAR(w, r, zname); err != nil {
			t.Errorf("ServeNAR: %v", err)
		}
	}))
	defer srv.Close()
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/" + ni.URL)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- resp
	}()
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the original was not fetched again")
	}
	var resp *http.Response
	select {
	case resp = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no response while the upstream holds the original's second half: nothing streamed")
	}
	if resp == nil {
		t.FailNow()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.FormatUint(ni.FileSize, 10) {
		t.Fatalf("status %d, Content-Length %s, want 200 and FileSize %d", resp.StatusCode, resp.Header.Get("Content-Length"), ni.FileSize)
	}
	head := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("the first zstd bytes while the upstream holds: %v", err)
	}
	close(hold)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if body := append(head, rest...); !bytes.Equal(body, first) {
		t.Fatalf("rebuilt file (%d bytes) is not the first one (%d bytes)", len(body), len(first))
	}
	if after := e.narinfo(t, it.Hash); after.FileHash.String() != ni.FileHash.String() || after.URL != ni.URL {
		t.Fatalf("narinfo changed: %s %s, was %s %s", after.URL, after.FileHash, ni.URL, ni.FileHash)
	}
	if ok, err := e.st.HasNAR(ctx, zname); err != nil || !ok {
		t.Fatalf("rebuilt file kept: %v, %v", ok, err)
	}
	// The original fetched for it goes again after its grace.
	waitGone(t, e.st, orig)
}

// A rebuilt zstd file that is not the bytes its narinfo names (as after
// an encoder change) is not served as if it were: the client streaming it
// is cut before the last byte, the file (its NAR checked) is kept and the
// narinfo names it anew, and the next client gets it whole.
func TestRecompressRebuildDiffers(t *testing.T) {
	e := newZstdEnvGrace(t, time.Hour)
	ctx := context.Background()
	it, orig, zname, first := e.recompressed(t, testNAR(t, 256<<10))
	// The narinfo as an older encoder would have left it.
	ni := e.narinfo(t, it.Hash)
	osrc, err := e.st.NARSource(ctx, orig)
	if err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("an older encoder's file"))
	if err := e.c.pointAt(ctx, it.Hash, ni, zname, orig, osrc, recompress.Result{Out: int64(len(first)) + 7, SHA256: other[:]}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EvictNARs(ctx, []string{zname}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	err = e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/nar/"+zname, nil), zname)
	// Its Content-Length was the old FileSize: the connection is aborted.
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("a rebuilt file not matching its FileHash: ServeNAR = %v (%d bytes sent), want ErrAborted", err, rec.Body.Len())
	}
	after := e.narinfo(t, it.Hash)
	zsum := sha256.Sum256(first)
	if after.FileSize != uint64(len(first)) || !bytes.Equal(after.FileHash.Digest(), zsum[:]) || after.URL != "nar/"+zname {
		t.Fatalf("narinfo after the rebuild: %s %d %s", after.URL, after.FileSize, after.FileHash)
	}
	if got := e.get(t, after.URL); !bytes.Equal(got, first) {
		t.Fatal("the next client does not get the rebuilt file")
	}
}

// recompressed serves nar as xz from the upstream through the proxy,
// recompresses it to zstd now and fetches the zstd file: it returns the
// upstream's item (its File is the xz file), the original's and the zstd
// file's names, and the zstd bytes.
func (e *zstdEnv) recompressed(t *testing.T, nar []byte) (it *fakeupstream.Item, orig, zname string, zstdBytes []byte) {
	t.Helper()
	sum := sha256.Sum256(nar)
	it = e.up.Add(fakeupstream.Path{File: xzFile(t, nar), Compression: "xz", NarHash: sum[:], NarSize: uint64(len(nar))})
	before := e.narinfo(t, it.Hash)
	e.get(t, before.URL)
	orig = before.URL[len("nar/"):]
	zname, err := e.c.transcodeShared(context.Background(), it.Hash, orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	return it, orig, zname, e.get(t, "nar/"+zname)
}
