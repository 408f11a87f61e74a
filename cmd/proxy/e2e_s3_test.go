package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

// startFleet prepares a bucket on a real S3 server (versitygw) and sets
// the AWS environment the proxies find their credentials in.
func startFleet(t *testing.T) (storage string) {
	t.Helper()
	srv := s3test.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return srv.URL(srv.Bucket(t), "fleet")
}

// TestFleetRealNix: proxies on one bucket act as one cache for the real
// Nix client. A pulls a closure with a 40 MiB image (several multipart
// parts) from the upstream into the bucket; with the upstream down, B, a
// fresh proxy with an empty cache dir, serves the whole closure from the
// bucket. Then a closure uploaded to B with `nix copy --to` is served by
// C, another fresh proxy, with no upstream at all.
func TestFleetRealNix(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	nixtest.Require(t)
	storage := startFleet(t)
	bin, err := proxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	c, cache := nixtest.BuildClosure(t, 40<<20)
	upstream, stopUpstream := nixtest.ServeDir(t, cache.Dir)

	a := startProxyArgs(t, bin, t.TempDir(), cache.PublicKey, []string{upstream}, "--storage", storage)
	copyThrough(t, "A, upstream up", a.url, cache.PublicKey, c)
	stopUpstream()

	b := startProxyArgs(t, bin, t.TempDir(), cache.PublicKey, []string{upstream}, "--storage", storage)
	copyThrough(t, "B, fresh, upstream down", b.url, cache.PublicKey, c)
	a.terminate(t)

	// Uploads: to B, then served by C.
	built, _ := nixtest.BuildClosure(t, 8<<20)
	dir := t.TempDir()
	token := "fleet-write-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret, pub := nixtest.NewKey(t, "fleet-1")
	flags := []string{"--storage", storage, "--write-token-file", tokenFile, "--secret-key-file", secret}
	b.terminate(t)
	b = startProxyArgs(t, bin, t.TempDir(), cache.PublicKey, []string{upstream}, flags...)
	hostname, _, _ := net.SplitHostPort(strings.TrimPrefix(b.url, "http://"))
	netrc := filepath.Join(dir, "netrc")
	if err := os.WriteFile(netrc, fmt.Appendf(nil, "machine %s login nix password %s\n", hostname, token), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := nixCmd(t, []string{"netrc-file = " + netrc}, "copy", "--store", built.Store, "--to", b.url+"?compression=zstd", built.Root); err != nil {
		t.Fatalf("nix copy --to B: %v\n%s", err, out)
	}
	t.Logf("uploaded %d paths to B in %v", len(built.Paths), time.Since(start).Round(time.Millisecond))
	cp := startProxyArgs(t, bin, t.TempDir(), cache.PublicKey, []string{upstream}, flags...)
	copyThrough(t, "C, fresh, the closure uploaded to B", cp.url, pub, built)
	b.terminate(t)
	cp.terminate(t)
}
