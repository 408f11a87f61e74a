package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// binDir holds the proxy binary the end-to-end tests run; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nix-cache-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxyBinary builds this package once, on first use, so tests that need no
// binary don't pay for the build. A race-enabled test binary gets a
// race-enabled proxy: the end-to-end run is the proxy's busiest workout.
var proxyBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "nix-cache-proxy")
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	cmd := exec.Command("go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// e2eBinary is the start of every end-to-end test: skipped with -short,
// skipped (or failed under CI) without the nix CLI when withNix, and the
// proxy binary built once.
func e2eBinary(t *testing.T, withNix bool) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	if withNix {
		nixtest.Require(t)
	}
	bin, err := proxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// stepLogger returns a log of a long test's steps, each with the seconds
// since the call.
func stepLogger(t *testing.T) func(format string, args ...any) {
	start := time.Now()
	return func(format string, args ...any) {
		t.Helper()
		t.Logf("[%6.2fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// TestEndToEndRealNix copies a closure with a 64 MiB path through the proxy
// with real nix: from a live upstream, then from the proxy's disk alone with
// the upstream stopped, then again after a graceful restart.
func TestEndToEndRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	c, cache := nixtest.BuildClosure(t, 64<<20)
	upstream, stopUpstream := nixtest.ServeDir(t, cache.Dir)

	t.Run("untrusted upstream key", func(t *testing.T) {
		// Same key name, different key: a proxy that checks only the name
		// of a Sig line lets these paths through. The client trusts the
		// real key, so any refusal here is the proxy's.
		_, wrong := nixtest.NewKey(t, "test-cache-1")
		p := startProxy(t, bin, t.TempDir(), wrong, upstream)
		_, out, err := nixtest.CopyFrom(t, p.url, cache.PublicKey, c.Root)
		if err == nil {
			t.Fatalf("nix copy through a proxy that trusts another key succeeded:\n%s", out)
		}
		t.Logf("nix copy failed as it should: %v\n%s", err, out)
		p.terminate(t)
	})

	cacheDir := t.TempDir()
	p := startProxy(t, bin, cacheDir, cache.PublicKey, upstream)
	copyThrough(t, "A, upstream up", p.url, cache.PublicKey, c)

	stopUpstream()
	copyThrough(t, "B, upstream down", p.url, cache.PublicKey, c)
	p.terminate(t)

	p = startProxy(t, bin, cacheDir, cache.PublicKey, upstream)
	copyThrough(t, "C, after restart", p.url, cache.PublicKey, c)
	p.terminate(t)

	// Given a key of its own, the proxy signs what it kept before it had
	// one: a client may trust the proxy's key alone.
	secret, proxyKey := nixtest.NewKey(t, "cache.lan-1")
	p = startProxyArgs(t, bin, cacheDir, cache.PublicKey, []string{upstream}, "--secret-key-file", secret)
	copyThrough(t, "D, trusting only the proxy's own key", p.url, proxyKey, c)
	p.terminate(t)
}

// copyThrough copies all of c from url into a fresh store and checks it.
func copyThrough(t *testing.T, what, url, publicKey string, c nixtest.Closure) {
	t.Helper()
	start := time.Now()
	store, out, err := nixtest.CopyFrom(t, url, publicKey, c.Paths...)
	if err != nil {
		t.Fatalf("store %s: nix copy: %v\n%s", what, err, out)
	}
	nixtest.VerifyCopy(t, store, c)
	t.Logf("store %s: copied %d paths in %v", what, len(c.Paths), time.Since(start).Round(time.Millisecond))
}

// proxyProcess is a running `nix-cache-proxy serve`.
type proxyProcess struct {
	url    string
	cmd    *exec.Cmd
	output *lockedBuffer // stdout and stderr
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, once done is closed
}

// startProxy starts the proxy on a free loopback port and waits until it
// answers GET /nix-cache-info. The process is killed when t ends, and its
// output logged if t failed.
func startProxy(t *testing.T, bin, cacheDir, publicKey string, upstreams ...string) *proxyProcess {
	t.Helper()
	return startProxyArgs(t, bin, cacheDir, publicKey, upstreams)
}

// startProxyArgs is startProxy with extra serve flags after the usual ones.
func startProxyArgs(t *testing.T, bin, cacheDir, publicKey string, upstreams []string, extra ...string) *proxyProcess {
	t.Helper()
	return startProxyAt(t, bin, freeAddr(t), cacheDir, publicKey, upstreams, extra...)
}

// startProxyAt is startProxyArgs on a given address.
func startProxyAt(t *testing.T, bin, addr, cacheDir, publicKey string, upstreams []string, extra ...string) *proxyProcess {
	t.Helper()
	p := spawnProxy(t, bin, addr, cacheDir, publicKey, upstreams, extra...)
	p.waitReady(t)
	return p
}

// spawnProxy starts the proxy without waiting for it to answer, for a
// test in which it may die on purpose before it is ready.
func spawnProxy(t *testing.T, bin, addr, cacheDir, publicKey string, upstreams []string, extra ...string) *proxyProcess {
	t.Helper()
	args := []string{"serve", "--listen", addr, "--cache-dir", cacheDir,
		"--trusted-public-key", publicKey, "--log-level", "debug"}
	for _, u := range upstreams {
		args = append(args, "--upstream", u)
	}
	args = append(args, extra...)
	p := &proxyProcess{
		url:    "http://" + addr,
		cmd:    exec.Command(bin, args...),
		output: new(lockedBuffer),
		done:   make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.Env = childEnv()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("proxy %s output:\n%s", p.url, p.output.Bytes())
		}
	})
	return p
}

// waitReady waits until the proxy answers GET /nix-cache-info.
func (p *proxyProcess) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.url + "/nix-cache-info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("proxy exited before it was ready: %v", p.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready after 20 s (last: %v)", err)
		}
	}
}

// childEnv is the environment for the proxy processes the tests start. A
// race-enabled binary sleeps atexit_sleep_ms (1 s by default) before every
// exit with status 0; that is a second per admin command and per shutdown.
func childEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// terminate sends SIGTERM and expects a clean exit within 10 s.
func (p *proxyProcess) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("proxy exited after SIGTERM: %v", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy still running 10 s after SIGTERM")
	}
}

// freeAddr returns a loopback address nothing listens on right now. Another
// process could take it before the proxy does; on a test machine that race
// is rare enough.
func freeAddr(t *testing.T) string {
	t.Helper()
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
		// The kernel may hand a just-closed port out again: never give the
		// same one to two servers of this test binary (it did: Prometheus
		// and the proxy's --metrics-listen once got the same port).
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut remembers the addresses freeAddr gave out.
var handedOut = struct {
	mu    sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// lockedBuffer is a bytes.Buffer safe for the process's writers and the
// test's reader at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of everything written so far.
func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// exited reports whether the proxy process has ended.
func (p *proxyProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
