package fakeupstream_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

func get(t *testing.T, url string) (int, []byte, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func TestServesSignedPaths(t *testing.T) {
	u := fakeupstream.New(t)
	file := fakeupstream.RandomBytes(1000)
	ref := fakeupstream.RandomHash() + "-dep"
	it := u.Add(fakeupstream.Path{File: file, Compression: "xz", References: []string{ref}})

	status, body, err := get(t, u.URL()+it.NarInfoPath)
	if err != nil || status != 200 || !bytes.Equal(body, it.NarInfo) {
		t.Fatalf("narinfo: %d %v %q", status, err, body)
	}
	ni, err := narinfo.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := narinfo.Verify(ni, []narinfo.PublicKey{u.PublicKey()}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if got := narinfo.NARName(ni); got != it.FileHash+".nar.xz" {
		t.Errorf("NARName %q, want %s.nar.xz", got, it.FileHash)
	}
	status, body, err = get(t, u.URL()+it.NARPath)
	if err != nil || status != 200 || !bytes.Equal(body, file) {
		t.Fatalf("NAR: %d %v, %d bytes", status, err, len(body))
	}
	if u.Count(it.NarInfoPath) != 1 || u.Count(it.NARPath) != 1 || u.Total() != 2 {
		t.Errorf("counts %d %d %d", u.Count(it.NarInfoPath), u.Count(it.NARPath), u.Total())
	}
}

func TestFaults(t *testing.T) {
	u := fakeupstream.New(t)
	file := fakeupstream.RandomBytes(1000)
	it := u.Add(fakeupstream.Path{File: file, Compression: "none"})
	tests := []struct {
		name    string
		fault   fakeupstream.Fault
		status  int
		n       int
		readErr bool
	}{
		{"status", fakeupstream.Fault{Status: 503}, 503, -1, false},
		{"cut", fakeupstream.Fault{CutAt: 100}, 200, 100, true},
		{"corrupt", fakeupstream.Fault{Corrupt: true}, 200, 1000, false},
		{"extra chunked", fakeupstream.Fault{Extra: 5, Chunked: true, Chunk: 64}, 200, 1005, false},
		{"none", fakeupstream.Fault{}, 200, 1000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u.SetFault(it.NARPath, tt.fault)
			status, body, err := get(t, u.URL()+it.NARPath)
			if status != tt.status || (err != nil) != tt.readErr || (tt.n >= 0 && len(body) != tt.n) {
				t.Errorf("got %d, %d bytes, err %v", status, len(body), err)
			}
		})
	}
}

func TestCloseRestart(t *testing.T) {
	u := fakeupstream.New(t)
	it := u.Add(fakeupstream.Path{File: []byte("nar")})
	u.Close()
	if _, _, err := get(t, u.URL()+it.NarInfoPath); err == nil {
		t.Fatal("closed upstream answered")
	}
	u.Restart()
	if status, _, err := get(t, u.URL()+it.NarInfoPath); err != nil || status != 200 {
		t.Fatalf("after Restart: %d %v", status, err)
	}
}
