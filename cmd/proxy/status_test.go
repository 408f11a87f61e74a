package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// TestStatusPage checks that serve mounts the status page at / over the
// real stack: it lists the upstream and counts a fetched path.
func TestStatusPage(t *testing.T) {
	up := fakeupstream.New(t)
	item := up.Add(fakeupstream.Path{Name: "hello-2.12", File: fakeupstream.RandomBytes(4096)})
	addr := freeAddr(t)
	tokenFile := filepath.Join(t.TempDir(), "write-token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", addr, "--cache-dir", t.TempDir(), "--upstream", up.URL(),
			"--trusted-public-key", up.PublicKey().String(), "--miss-recheck", "0", "--write-token-file", tokenFile},
			io.Discard, new(bytes.Buffer))
	}()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + addr
	var resp *http.Response
	var err error
	for range 100 {
		if resp, err = http.Get(base + "/" + item.Hash + ".narinfo"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("narinfo: %v %v", resp, err)
	}
	resp.Body.Close()
	// An upload the receiver refuses: the page counts it.
	req, _ := http.NewRequest(http.MethodPut, base+"/"+fakeupstream.RandomHash()+".narinfo", strings.NewReader("not a narinfo"))
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT of a bad narinfo: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The miss log is written every second: wait for the page to list it.
	var body []byte
	for range 60 {
		resp, err = http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte("-hello-2.12")) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{strings.TrimPrefix(up.URL(), "http://"), "-hello-2.12", "healthy"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if resp, err := http.Head(base + "/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /: %v %v", resp, err)
	}
	resp, err = http.Get(base + "/?format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		Lookups struct {
			NarInfoMisses int64 `json:"narinfo_misses"`
		} `json:"lookups"`
		Disk struct {
			NarInfos int `json:"narinfos"`
		} `json:"disk"`
		Uploads map[string]int64 `json:"uploads"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	if snap.Lookups.NarInfoMisses != 1 || snap.Disk.NarInfos != 1 || snap.Uploads["rejected"] != 1 {
		t.Errorf("JSON snapshot: %+v", snap)
	}
}
