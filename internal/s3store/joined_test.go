package s3store

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

// TestJoined: a proxy streaming a NAR from the peer filling it spools it
// and uploads nothing; its Commit returns once the peer's object is in
// the bucket. When the peer's never comes, it uploads its own copy after
// JoinWait.
func TestJoined(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	peer := openBucket(t, srv, bucket)
	loc, err := ParseURL(srv.URL(bucket, "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	writes := 0 // the joiner's object writes
	observe := func(op, result string, d time.Duration) {
		switch op {
		case "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload":
			mu.Lock()
			writes++
			mu.Unlock()
		}
	}
	b, err := Open(context.Background(), loc, Options{SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Credentials: srv.Credentials(), PartSize: testPartSize, JoinWait: 20 * time.Second, Observe: observe})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(testPartSize + 1000)
	mu.Lock()
	writes = 0 // Open writes nix-cache-info
	mu.Unlock()

	// The peer commits a moment after the joiner has every byte.
	j, err := b.CreateJoined("0joined.nar")
	if err != nil {
		t.Fatal(err)
	}
	writeInChunks(t, j, data)
	if r, err := j.OpenPartial(); err != nil {
		t.Fatal(err)
	} else if got, _ := io.ReadAll(r); !bytes.Equal(got, data) {
		t.Error("the spool does not hold what was written")
	} else {
		r.Close()
	}
	if _, err := b.Stat("0joined.nar"); err == nil {
		t.Fatal("the joiner wrote to the bucket before Commit")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		p, _ := peer.Create("0joined.nar")
		writeInChunks(t, p, data)
		p.Commit()
	}()
	if n, err := j.Commit(); err != nil || n != int64(len(data)) {
		t.Fatalf("Commit = %d, %v", n, err)
	}
	mu.Lock()
	if writes != 0 {
		t.Errorf("the joiner wrote %d times to the bucket; the peer's object is the one", writes)
	}
	mu.Unlock()
	b.joinWait = time.Second

	// No peer object: the joiner's own copy after JoinWait.
	j, _ = b.CreateJoined("0alone.nar")
	writeInChunks(t, j, data)
	if n, err := j.Commit(); err != nil || n != int64(len(data)) {
		t.Fatalf("Commit without the peer's object = %d, %v", n, err)
	}
	f, err := b.Open("0alone.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := io.ReadAll(f); !bytes.Equal(got, data) {
		t.Error("the joiner's own upload differs from what it spooled")
	}
}
