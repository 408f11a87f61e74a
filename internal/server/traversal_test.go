package server_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTraversal sends request targets byte for byte, as an attacker's own
// client would (no URL cleaning), to the real server over a cache dir with
// secret files next to it and inside it. Every GET must be refused by name
// (400) or by route (404), show no secret, and reach neither the cache
// lookup nor the upstream: names are checked before any path is built.
// Every PUT, with the write token, must be refused too and write nothing.
func TestTraversal(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	const secret = "SECRET-6b1d0c"
	for _, f := range []string{filepath.Join(parent, "secret"), filepath.Join(dir, "secret"), filepath.Join(parent, "index.db")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(secret), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fu := fakeupstream.New(t)
	reg := prometheus.NewRegistry()
	const token = "write-token"
	p := newProxy(t, config{ups: []*fakeupstream.Upstream{fu}, dir: dir, reg: reg, writeToken: token})
	it := fu.Add(fakeupstream.Path{Name: "real", File: fakeupstream.RandomBytes(500), Compression: "xz"})
	narPath := p.narURL(it.Hash)
	narName := strings.TrimPrefix(narPath, "/nar/")
	hash := it.Hash
	lookupsBefore := testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("narinfo", "miss")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("narinfo", "hit")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("nar", "miss")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("nar", "hit"))
	asksBefore := fu.Total()

	targets := []string{
		// plain and dot-segment forms
		"/../secret", "/../../secret", "/nar/../secret", "/nar/../../secret", "/nar/./../secret",
		"/nar/" + narName + "/../../secret", "/log/../../secret",
		// percent-encoded, mixed case, partly encoded
		"/nar/..%2fsecret", "/nar/..%2Fsecret", "/nar/%2e%2e%2fsecret", "/nar/%2E%2E%2F%2E%2E%2Fsecret",
		"/nar/.%2e/secret", "/nar/%2e%2e/%2e%2e/secret", "/%2e%2e/secret", "/%2e%2e%2fsecret",
		"/nar/..%2f..%2fsecret", "/log/..%2f..%2fsecret", "/..%2Findex.db.narinfo",
		"/" + hash + "%2f..%2f..%2fsecret", "/" + hash + ".narinfo%2f..%2f..%2fsecret",
		// double encoding: must not be decoded twice
		"/nar/%252e%252e%252fsecret", "/%252e%252e%252fsecret", "/nar/..%252f..%252fsecret",
		// backslashes, raw and encoded
		"/nar/..\\secret", "/nar/..\\..\\secret", "/nar/..%5csecret", "/nar/..%5C..%5Csecret", "/\\..\\secret",
		// a valid name followed by traversal
		"/nar/" + narName + "%2f..%2f..%2fsecret", "/nar/" + narName[:50] + "..%2f.nar",
		"/log/" + hash + "-x%2f..%2f..%2fsecret", "/log/" + hash + "-..", "/" + hash + ".ls%2f..%2fsecret",
		// absolute paths
		"//etc/passwd", "/nar//etc/passwd", "/nar/%2fetc%2fpasswd", "/log/%2fetc%2fpasswd", "/%2fetc%2fpasswd",
		"/nar/" + filepath.Join(parent, "secret"),
		// NUL bytes
		"/nar/" + narName + "%00", "/nar/" + narName + "%00.xz", "/" + hash + ".narinfo%00", "/" + hash + "%00.narinfo",
		"/log/" + hash + "-x%00", "/nar/%00../secret",
		// overlong UTF-8 for '.', '/' and '\', and look-alike dots and slashes
		"/nar/%c0%ae%c0%ae%c0%afsecret", "/nar/%c0%ae%c0%ae/secret", "/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afsecret",
		"/nar/%e0%80%ae%e0%80%ae%e0%80%afsecret", "/nar/%c1%9csecret", "/nar/%ef%bc%8e%ef%bc%8e%ef%bc%8fsecret",
		"/nar/%e2%80%a4%e2%80%a4%e2%88%95secret",
		// the files themselves, by name
		"/secret", "/index.db", "/nar/secret", "/log/secret",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			status, body := rawDo(t, p.srv.Listener.Addr().String(), "GET", target, "")
			putStatus, putBody := rawDo(t, p.srv.Listener.Addr().String(), "PUT", target, token)
			t.Logf("GET %d, PUT %d", status, putStatus)
			if status != http.StatusBadRequest && status != http.StatusNotFound {
				t.Errorf("GET: status %d, want 400 or 404: %q", status, body)
			}
			if bytes.Contains(body, []byte(secret)) || bytes.Contains(body, []byte("root:")) {
				t.Errorf("served a file it must not: %q", body)
			}
			if putStatus != http.StatusBadRequest && putStatus != http.StatusNotFound && putStatus != http.StatusMethodNotAllowed {
				t.Errorf("PUT: status %d, want 400, 404 or 405: %q", putStatus, putBody)
			}
		})
	}
	lookupsAfter := testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("narinfo", "miss")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("narinfo", "hit")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("nar", "miss")) +
		testutil.ToFloat64(p.metrics.Lookups.WithLabelValues("nar", "hit"))
	if lookupsAfter != lookupsBefore {
		t.Errorf("hostile names reached the cache: %v lookups", lookupsAfter-lookupsBefore)
	}
	if n := fu.Total() - asksBefore; n != 0 {
		t.Errorf("hostile names reached the upstream %d times", n)
	}
	// Nothing was written: the secrets are intact and no file holds the
	// PUT body.
	filepath.WalkDir(parent, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(putBody)) {
			t.Errorf("a PUT wrote %s", path)
		}
		return nil
	})
	for _, f := range []string{filepath.Join(parent, "secret"), filepath.Join(dir, "secret")} {
		if b, err := os.ReadFile(f); err != nil || string(b) != secret {
			t.Errorf("%s changed: %q, %v", f, b, err)
		}
	}

	// The same raw client gets the real path: the refusals above are about
	// the names, not the client.
	if status, body := rawDo(t, p.srv.Listener.Addr().String(), "GET", "/"+hash+".narinfo", ""); status != http.StatusOK {
		t.Errorf("legit narinfo: %d %q", status, body)
	}
	if status, body := rawDo(t, p.srv.Listener.Addr().String(), "GET", narPath, ""); status != http.StatusOK || len(body) == 0 {
		t.Errorf("legit NAR: %d, %d bytes", status, len(body))
	}
}

// putBody is what every PUT sends, to be looked for on disk afterwards.
const putBody = "PWNED-by-traversal-3f9a"

// rawDo sends "METHOD target HTTP/1.1" exactly as given (a PUT with
// putBody and the write token) and returns the status and body.
func rawDo(t *testing.T, addr, method, target, token string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n"
	if method == "PUT" {
		req += "Authorization: Bearer " + token + "\r\nContent-Length: " + strconv.Itoa(len(putBody)) + "\r\n\r\n" + putBody
	} else {
		req += "\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %q: body: %v", method, target, err)
	}
	return resp.StatusCode, body
}
