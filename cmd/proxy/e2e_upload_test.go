package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestUploadRealNix is the no-cachix bootstrap with the real Nix client:
// a builder pushes a closure with a 64 MiB image into the proxy with plain
// `nix copy --to` (netrc credentials, zstd), the proxy signs it with a key
// made by `nix-cache-proxy keygen`, and with no upstream reachable a fresh
// store copies it all back trusting only that key. A build log goes in
// with `nix store copy-log` and comes back with `nix log`.
func TestUploadRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	c, builderCache := nixtest.BuildClosure(t, 64<<20)

	dir := t.TempDir()
	secret, public := filepath.Join(dir, "cache.lan-1.secret"), filepath.Join(dir, "cache.lan-1.public")
	pub := strings.TrimSpace(cli(t, bin, 0, "keygen", "--secret-key-file", secret, "--public-key-file", public, "cache.lan-1").stdout)
	token := "e2e-write-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	// The only upstream refuses connections: everything the clients get
	// comes from the upload.
	deadUpstream := "http://" + freeAddr(t)
	flags := []string{"--write-token-file", tokenFile, "--secret-key-file", secret}
	p := startProxyArgs(t, bin, cacheDir, builderCache.PublicKey, []string{deadUpstream}, flags...)
	host := strings.TrimPrefix(p.url, "http://")
	to := p.url + "?compression=zstd"

	netrc := filepath.Join(dir, "netrc")
	hostname, _, _ := net.SplitHostPort(host)
	if err := os.WriteFile(netrc, fmt.Appendf(nil, "machine %s login nix password %s\n", hostname, token), 0o600); err != nil {
		t.Fatal(err)
	}
	withNetrc := "netrc-file = " + netrc

	if out, err := nixCmd(t, nil, "copy", "--store", c.Store, "--to", to, c.Root); err == nil {
		t.Fatalf("nix copy --to without credentials succeeded:\n%s", out)
	} else if !strings.Contains(string(out), "401") {
		t.Errorf("nix copy without credentials failed, but not with 401:\n%s", out)
	}

	start := time.Now()
	if out, err := nixCmd(t, []string{withNetrc}, "copy", "--store", c.Store, "--to", to, c.Root); err != nil {
		t.Fatalf("nix copy --to %s: %v\n%s", to, err, out)
	}
	t.Logf("uploaded %d paths in %v", len(c.Paths), time.Since(start).Round(time.Millisecond))

	copyThrough(t, "trusting only the proxy's key", p.url, pub, c)
	if _, out, err := nixtest.CopyFrom(t, p.url, builderCache.PublicKey, c.Root); err == nil {
		t.Fatalf("a client trusting no key the proxy signs with copied:\n%s", out)
	} else if !strings.Contains(string(out), "signature") {
		t.Errorf("copy failed, but not for the signature:\n%s", out)
	}

	// Logs: none before copy-log, the builder's after.
	logOf := func() ([]byte, error) {
		return nixCmd(t, nil, "log", "--store", p.url, c.Root)
	}
	if out, err := logOf(); err == nil {
		t.Fatalf("nix log found a log before any was uploaded:\n%s", out)
	}
	if out, err := nixCmd(t, []string{withNetrc}, "store", "copy-log", "--store", c.Store, "--to", p.url, c.Root); err != nil {
		t.Fatalf("nix store copy-log: %v\n%s", err, out)
	}
	if out, err := logOf(); err != nil {
		t.Fatalf("nix log after copy-log: %v\n%s", err, out)
	}

	// A restart keeps every upload.
	p.terminate(t)
	p = startProxyArgs(t, bin, cacheDir, builderCache.PublicKey, []string{deadUpstream}, flags...)
	copyThrough(t, "after a restart", p.url, pub, c)
	p.terminate(t)
}

// TestUploadKilledMidway: a proxy killed with SIGKILL while a NAR upload is
// half received shows nothing of it after a restart.
func TestUploadKilledMidway(t *testing.T) {
	bin := e2eBinary(t, false)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	token := "killed-midway-token-0123456789"
	os.WriteFile(tokenFile, []byte(token), 0o600)
	cacheDir := t.TempDir()
	up := "http://" + freeAddr(t)
	p := startProxyArgs(t, bin, cacheDir, defaultKey, []string{up}, "--write-token-file", tokenFile)
	name := "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar"
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /nar/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", name, token, 8<<20)
	conn.Write(make([]byte, 4<<20))
	// Wait until the proxy has written some of it to a temp file.
	poll(t, "a temp file of the upload", 10*time.Second, func() (bool, string) {
		entries, _ := os.ReadDir(filepath.Join(cacheDir, "tmp"))
		return len(entries) > 0, fmt.Sprint(len(entries), " temp files")
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done

	p = startProxyArgs(t, bin, cacheDir, defaultKey, []string{up}, "--write-token-file", tokenFile)
	resp, err := http.Head(p.url + "/nar/" + name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of the half-uploaded NAR after restart: %d, want 404", resp.StatusCode)
	}
	if entries, _ := os.ReadDir(filepath.Join(cacheDir, "tmp")); len(entries) != 0 {
		t.Fatalf("temp files after restart: %d", len(entries))
	}
	p.terminate(t)
}

// nixCmd runs nix with the test configuration plus extra lines, and its own
// XDG cache so nothing is remembered between calls.
func nixCmd(t *testing.T, extra []string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix", args...)
	cmd.Env = append(nixtest.Env(extra...), "XDG_CACHE_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("nix %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}
