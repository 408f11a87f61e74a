package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestUploadedVariantsRealNix is issue 20's item 4 with the real Nix
// client: two variants of one --keep-latest rule uploaded with `nix copy
// --to` under a bound smaller than both. The later upload is the one kept
// (it was the earlier, with no upload time recorded); the earlier goes
// whole, narinfo and NAR, so a client holding its narinfo gets 404; gc
// exits 1 saying the kept variant holds the space; `delete` refuses the
// pinned variant, then removes it once unpinned, and the cache verifies.
func TestUploadedVariantsRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	var paths []string
	for _, name := range []string{"kl-a.txt", "kl-b.txt"} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString(fakeupstream.RandomBytes(45000))), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := nixCmd(t, nil, "store", "add-file", "--store", store, file)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		paths = append(paths, strings.TrimSpace(string(out)))
	}
	a, b := paths[0], paths[1]

	secret, _ := nixtest.NewKey(t, "cache.lan-1")
	token := "uploaded-variants-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxyArgs(t, bin, t.TempDir(), defaultKey, []string{"http://" + freeAddr(t)},
		"--write-token-file", tokenFile, "--secret-key-file", secret,
		"--keep-latest", "kl-*=1", "--max-size", "40KiB", "--min-free", "0")
	hostname, _, _ := net.SplitHostPort(strings.TrimPrefix(p.url, "http://"))
	netrc := filepath.Join(dir, "netrc")
	if err := os.WriteFile(netrc, fmt.Appendf(nil, "machine %s login nix password %s\n", hostname, token), 0o600); err != nil {
		t.Fatal(err)
	}
	upload := func(path string) {
		t.Helper()
		if out, err := nixCmd(t, []string{"netrc-file = " + netrc}, "copy", "--store", store, "--to", p.url, path); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	upload(a)
	// A client fetches a's narinfo (Nix keeps it for 30 days).
	resp := must(http.Get(p.url + "/" + narinfo.HashOfStorePath(a) + ".narinfo"))
	ni, err := narinfo.Parse(mustRead(t, resp))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // distinct upload times
	upload(b)

	var kept []evict.Variant
	if err := json.Unmarshal(mustRead(t, must(http.Get(p.url+"/_/kept"))), &kept); err != nil {
		t.Fatal(err)
	}
	if len(kept) != 1 || kept[0].StorePath != b || kept[0].Seen.Year() < 2000 {
		t.Errorf("/_/kept: %+v, want %s with its upload time", kept, b)
	}

	gc := cli(t, bin, 1, "gc", "--server", p.url)
	t.Logf("gc:\n%s", gc.stdout)
	for _, want := range []string{"kept  " + b, "cannot reach the bound", "kept variants (--keep-latest) 4", "KiB in 1 NAR(s), uploads 0 B in 0 NAR(s)"} {
		if !strings.Contains(gc.stdout, want) {
			t.Errorf("gc does not say %q", want)
		}
	}
	// A background pass (the bound needed room) or gc deleted a.
	deleted := "deleted  " + a
	if !strings.Contains(gc.stdout, deleted) && !strings.Contains(string(p.output.Bytes()), `msg="deleted upload" store_path=`+a) {
		t.Errorf("neither gc nor the log says a was deleted")
	}
	status := func(path string) int {
		resp := must(http.Get(p.url + path))
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/" + ni.URL); got != http.StatusNotFound {
		t.Errorf("a's NAR, asked for by a client holding its narinfo: %d, want 404", got)
	}
	if got := status("/" + narinfo.HashOfStorePath(a) + ".narinfo"); got != http.StatusNotFound {
		t.Errorf("a's narinfo: %d, want 404", got)
	}

	cli(t, bin, 0, "pin", "--server", p.url, b)
	if r := cli(t, bin, 1, "delete", "--server", p.url, b); !strings.Contains(r.stderr, "is pinned: unpin it first") {
		t.Errorf("delete of the pinned variant: %s", r.stderr)
	}
	cli(t, bin, 0, "unpin", "--server", p.url, b)
	if r := cli(t, bin, 0, "delete", "--server", p.url, b); !strings.Contains(r.stdout, "deleted  "+b) || !strings.Contains(r.stdout, "uploaded: gone for good") {
		t.Errorf("delete: %s", r.stdout)
	}
	if got := status("/" + narinfo.HashOfStorePath(b) + ".narinfo"); got != http.StatusNotFound {
		t.Errorf("b's narinfo after delete: %d, want 404", got)
	}
	if r := cli(t, bin, 0, "verify", "--server", p.url); !strings.Contains(r.stderr, "all sound") {
		t.Errorf("verify after the deletes: %s", r.stderr)
	}
	if r := cli(t, bin, 0, "gc", "--server", p.url); strings.Contains(r.stdout, "cannot reach") {
		t.Errorf("gc with nothing left: %s", r.stdout)
	}
	p.terminate(t)
}
