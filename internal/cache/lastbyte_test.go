package cache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// settle waits until c has no NAR download in flight: a client has its
// last byte before the fill commits the NAR, so a test that looks at the
// store after a GET waits for the commit.
func settle(t testing.TB, c *Cache) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(c.Downloads()) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("downloads still in flight after 10 s: %v", c.Downloads())
		}
	}
}

// TestLastByteBeforeCommit: once a NAR is all in and checked, its clients
// get the last byte and their handlers return while the file is still
// being made durable and indexed; who asks meanwhile streams it from the
// part file; and it is stored once the commit is through.
func TestLastByteBeforeCommit(t *testing.T) {
	e := newRoomEnv(t, t.TempDir(), nil)
	gate := make(chan struct{})
	e.files.commitGate = gate
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	it := e.up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(300 << 10), Compression: "none"})
	ent, err := e.c.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	serve := func() <-chan *httptest.ResponseRecorder {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			rec := httptest.NewRecorder()
			if err := e.c.ServeNAR(rec, httptest.NewRequest(http.MethodGet, "/nar/"+ent.NARName, nil), ent.NARName); err != nil {
				rec.Code = http.StatusBadGateway
			}
			done <- rec
		}()
		return done
	}
	for _, who := range []string{"the first client", "a client during the commit"} {
		select {
		case rec := <-serve():
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), it.File) {
				t.Fatalf("%s: %d, %d bytes; want the NAR", who, rec.Code, rec.Body.Len())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no whole body while the commit waits", who)
		}
	}
	if _, err := e.st.OpenNAR(context.Background(), ent.NARName); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("OpenNAR before the commit: %v, want ErrNotFound", err)
	}
	close(gate)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		f, err := e.st.OpenNAR(context.Background(), ent.NARName)
		if err == nil {
			f.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stored after the commit: %v", err)
		}
	}
}
