package s3store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

const testPartSize = 5 << 20

// openBucket opens a fresh bucket on srv with a prefix, as a proxy would.
func openBucket(t *testing.T, srv *s3test.Server, bucket string) *Bucket {
	t.Helper()
	loc, err := ParseURL(srv.URL(bucket, "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), loc, Options{SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Credentials: srv.Credentials(), PartSize: testPartSize})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeInChunks writes data through p in uneven chunks, as a download does.
func writeInChunks(t *testing.T, p store.PartFile, data []byte) {
	t.Helper()
	for off := 0; off < len(data); {
		k := min(len(data)-off, 100_000+off%77_777)
		if _, err := p.Write(data[off : off+k]); err != nil {
			t.Fatal(err)
		}
		off += k
	}
}

func TestFiles(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Bucket(t))
	for _, size := range []int{0, 1000, testPartSize, 2*testPartSize + 12345} {
		name := "0abc" + string(rune('a'+size%26)) + ".nar.zst"
		t.Run(name, func(t *testing.T) {
			data := randomBytes(size)
			p, err := b.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			writeInChunks(t, p, data)
			partial, err := p.OpenPartial()
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := io.ReadAll(partial); !bytes.Equal(got, data) {
				t.Errorf("OpenPartial read %d bytes, want the %d written", len(got), len(data))
			}
			if _, err := b.Open(name); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Open before Commit: %v, want fs.ErrNotExist", err)
			}
			n, err := p.Commit()
			if err != nil || n != int64(size) {
				t.Fatalf("Commit = %d, %v; want %d", n, err, size)
			}
			// The partial handle outlives the spool file.
			partial.Seek(0, io.SeekStart)
			if got, _ := io.ReadAll(partial); !bytes.Equal(got, data) {
				t.Errorf("partial handle after Commit read %d bytes", len(got))
			}
			partial.Close()
			f, err := b.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got, _ := io.ReadAll(f); !bytes.Equal(got, data) {
				t.Errorf("Open read %d bytes, want %d", len(got), size)
			}
			if st, err := b.Stat(name); err != nil || st != int64(size) {
				t.Errorf("Stat = %d, %v", st, err)
			}
		})
	}
	var listed int
	if err := b.List(context.Background(), func(string, int64) error { listed++; return nil }); err != nil || listed != 4 {
		t.Errorf("List saw %d files, %v; want 4", listed, err)
	}
	spool, _ := os.ReadDir(b.spool)
	if len(spool) != 0 {
		t.Errorf("spool dir keeps %d files after commits", len(spool))
	}
}

func TestDiscardLeavesNothing(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	b := openBucket(t, srv, bucket)
	for _, size := range []int{1000, 2*testPartSize + 1} {
		p, err := b.Create("0discard.nar")
		if err != nil {
			t.Fatal(err)
		}
		writeInChunks(t, p, randomBytes(size))
		if err := p.Discard(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat("0discard.nar"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("size %d: Stat after Discard: %v, want fs.ErrNotExist", size, err)
		}
	}
	ups, err := srv.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left behind", len(ups.Uploads))
	}
}

// TestCommitTwice: two writers of the same content-addressed NAR both
// succeed, and the object is never overwritten mid-read.
func TestCommitTwice(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Bucket(t))
	for _, size := range []int{1000, testPartSize + 1} {
		data := randomBytes(size)
		p1, _ := b.Create("0twice.nar")
		p2, _ := b.Create("0twice.nar")
		writeInChunks(t, p1, data)
		writeInChunks(t, p2, data)
		if _, err := p1.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := p2.Commit(); err != nil {
			t.Errorf("size %d: second Commit of the same NAR: %v", size, err)
		}
		b.Remove("0twice.nar")
	}
}

// TestServeContentRange: a NAR in the bucket is served by http.ServeContent
// as a file on disk is: whole, by range, and HEAD.
func TestServeContentRange(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Bucket(t))
	data := randomBytes(3 * testPartSize)
	p, _ := b.Create("0range.nar")
	writeInChunks(t, p, data)
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := b.Open("0range.nar")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Type", "application/x-nix-nar")
		http.ServeContent(w, r, "0range.nar", st.ModTime(), f)
	})
	tests := []struct {
		rng        string
		status     int
		start, end int
	}{
		{"", 200, 0, len(data)},
		{"bytes=100-199", 206, 100, 200},
		{"bytes=10000000-", 206, 10000000, len(data)},
		{"bytes=-5", 206, len(data) - 5, len(data)},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/", nil)
		if tt.rng != "" {
			req.Header.Set("Range", tt.rng)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.status || !bytes.Equal(rec.Body.Bytes(), data[tt.start:tt.end]) {
			t.Errorf("Range %q: status %d, %d bytes; want %d, bytes %d-%d", tt.rng, rec.Code, rec.Body.Len(), tt.status, tt.start, tt.end)
		}
	}
}

func TestShared(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Bucket(t))
	ctx := context.Background()
	if _, err := b.NarInfo(ctx, "0hash"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("NarInfo of nothing: %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Source(ctx, "0x.nar"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Source of nothing: %v, want fs.ErrNotExist", err)
	}
	src := store.NARSource{Hash: "0hash", Upstream: "http://up", URL: "http://up/nar/x.nar", Size: 42, SHA256: []byte{1, 2}}
	if err := b.PutSource(ctx, "0x.nar", src); err != nil {
		t.Fatal(err)
	}
	got, err := b.Source(ctx, "0x.nar")
	if err != nil || got.URL != src.URL || got.Size != 42 || !bytes.Equal(got.SHA256, src.SHA256) {
		t.Errorf("Source = %+v, %v; want %+v", got, err, src)
	}
	if err := b.PublishNarInfo(ctx, "0hash", []byte("StorePath: x\n")); err != nil {
		t.Fatal(err)
	}
	if text, err := b.NarInfo(ctx, "0hash"); err != nil || string(text) != "StorePath: x\n" {
		t.Errorf("NarInfo = %q, %v", text, err)
	}
	// The bucket is a Nix binary cache: nix-cache-info under the prefix.
	resp, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: &b.loc.Bucket, Key: ptr("fleet/nix-cache-info")})
	if err != nil {
		t.Fatalf("nix-cache-info: %v", err)
	}
	resp.Body.Close()
}

func ptr[T any](v T) *T { return &v }

// TestOpenUnreachable: a bucket that does not answer fails Open quickly
// with an error naming it, not on the first client's request.
func TestOpenUnreachable(t *testing.T) {
	loc, _ := ParseURL("s3://nothing?endpoint=127.0.0.1:1&scheme=http")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := s3test.Start(t)
	_, err := Open(ctx, loc, Options{SpoolDir: t.TempDir(), Credentials: srv.Credentials()})
	if err == nil {
		t.Fatal("Open of an endpoint with nothing listening succeeded")
	}
}
