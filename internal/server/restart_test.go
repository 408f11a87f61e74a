package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
)

// TestRestart: what was cached survives a restart and is served with the
// upstream down; a NAR file deleted by hand is noticed, never served wrong,
// and fetched again once the upstream is back.
func TestRestart(t *testing.T) {
	fu := fakeupstream.New(t)
	dir := t.TempDir()
	file := fakeupstream.RandomBytes(300 << 10)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "zstd"})

	p := newProxy(t, config{ups: ups(fu), dir: dir})
	info := p.get("/" + it.Hash + ".narinfo")
	nar := p.narURL(it.Hash)
	if r := p.get(nar); r.status != http.StatusOK || !bytes.Equal(r.body, file) {
		t.Fatalf("first GET: %d, %d bytes", r.status, len(r.body))
	}
	p.stop()
	fu.Close()

	p = newProxy(t, config{ups: ups(fu), dir: dir})
	if r := p.get("/" + it.Hash + ".narinfo"); r.status != http.StatusOK || !bytes.Equal(r.body, info.body) {
		t.Errorf("narinfo after restart: %d %q, want %q", r.status, r.body, info.body)
	}
	if r := p.get(nar); r.status != http.StatusOK || r.readErr != nil || !bytes.Equal(r.body, file) {
		t.Errorf("NAR after restart: %d, %d bytes, read error %v", r.status, len(r.body), r.readErr)
	}
	if r := p.get(nar, "Range", "bytes=10-19"); r.status != http.StatusPartialContent || !bytes.Equal(r.body, file[10:20]) {
		t.Errorf("Range after restart: %d %q", r.status, r.body)
	}

	name := nar[len("/nar/"):]
	if err := os.Remove(filepath.Join(dir, "nar", name[:2], name)); err != nil {
		t.Fatal(err)
	}
	// Upstream down: an error, never a 200 with a wrong or empty body.
	r := p.get(nar)
	if r.status == http.StatusOK {
		t.Fatalf("deleted NAR with the upstream down: 200 with %d bytes", len(r.body))
	}
	if r.status != http.StatusNotFound || r.header.Get(server.ErrorHeader) == "" {
		t.Errorf("deleted NAR with the upstream down: %d, %s %q", r.status, server.ErrorHeader, r.header.Get(server.ErrorHeader))
	}
	if has, err := p.store.HasNAR(context.Background(), name); has || err != nil {
		t.Errorf("HasNAR = %v, %v: the row of the missing file was kept", has, err)
	}

	fu.Restart()
	if r := p.get(nar); r.status != http.StatusOK || r.readErr != nil || !bytes.Equal(r.body, file) {
		t.Fatalf("deleted NAR with the upstream back: %d, %d bytes, read error %v", r.status, len(r.body), r.readErr)
	}
	if n := fu.Count(it.NARPath); n != 2 {
		t.Errorf("upstream NAR requests: %d, want 2", n)
	}
	p.settle()
	if r := p.get(nar); r.status != http.StatusOK || !bytes.Equal(r.body, file) || r.header.Get("ETag") == "" {
		t.Errorf("hit after the refetch: %d, %d bytes", r.status, len(r.body))
	}
}
