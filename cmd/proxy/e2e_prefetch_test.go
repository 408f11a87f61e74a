package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// TestPrefetchWatchCheckRealNix drives the admin side of the proxy with the
// real binary and real nix: a path a client missed is pulled in by the
// watcher once it appears upstream; prefetch, check (against the server,
// the cache dir alone and the upstreams) and pin work end to end; and a
// NAR deleted by hand is reported by check.
//
// The order keeps the upstream up until the end, so one static server (one
// URL) serves every step: X is prefetched and checked, Y is missed, added
// upstream and pulled in by the watcher, X's image NAR is deleted and
// found missing by the server and by local mode, re-pinned in local mode,
// and after a restart both closures are copied from the proxy alone.
func TestPrefetchWatchCheckRealNix(t *testing.T) {
	step := stepLogger(t)
	bin := e2eBinary(t, true)
	step("proxy binary ready")

	x, cache := nixtest.BuildClosure(t, 4<<20)
	step("built closure X (%d paths, 4 MiB image) into a signed upstream", len(x.Paths))
	// Y gets its own cache from BuildClosure; only its store is used, to add
	// it to X's cache (the upstream) later.
	y, _ := nixtest.BuildClosure(t, 64<<10)
	step("built closure Y (%d paths), not upstream yet", len(y.Paths))

	upstream, stopUpstream := nixtest.ServeDir(t, cache.Dir)
	cacheDir := t.TempDir()
	// --upstream=URL: check's bare --upstream means "ask the upstreams".
	upFlags := []string{"--upstream=" + upstream, "--trusted-public-key", cache.PublicKey}
	p := startProxyArgs(t, bin, cacheDir, cache.PublicKey, []string{upstream},
		"--miss-recheck", "1s", "--miss-recheck-max", "4s", "--negative-ttl", "1s")
	step("proxy serving at %s", p.url)
	srv := "--server=" + p.url

	// Prefetch X while the server runs and the upstream is up.
	cli(t, bin, 0, "prefetch", "--closure", x.Root, srv)
	cli(t, bin, 0, "check", "--closure", x.Root, srv)
	step("prefetch --closure X, then check --closure X: exit 0")

	// A client asks for Y, which no upstream has yet.
	yRoot := narinfo.HashOfStorePath(y.Root)
	_, out, err := nixtest.CopyFrom(t, p.url, cache.PublicKey, y.Root)
	if err == nil {
		t.Fatalf("nix copy of Y before it is upstream succeeded:\n%s", out)
	}
	step("nix copy of Y through the proxy failed as it should: %v", err)
	poll(t, "misses lists Y's root as not-found", 5*time.Second, func() (bool, string) {
		m := missOf(t, bin, srv, yRoot)
		return m.Outcome == store.OutcomeNotFound && m.Count >= 1, fmt.Sprintf("%+v", m)
	})
	step("misses --json lists Y's root %s as not-found", yRoot)

	// Let the watcher re-ask at least once and find nothing: the interval
	// doubles from --miss-recheck.
	poll(t, "the watcher re-asks about Y's root", 10*time.Second, func() (bool, string) {
		m := missOf(t, bin, srv, yRoot)
		return m.CheckInterval >= 2*time.Second, fmt.Sprintf("%+v", m)
	})
	step("the watcher re-asked about Y's root and backed off")

	// Y appears upstream: the watcher pulls in its whole closure unasked.
	cli(t, bin, 1, "check", "--closure", y.Root, srv)
	nixtest.AddToCache(t, cache, y)
	added := time.Now()
	step("added Y's closure to the upstream")
	poll(t, "the watcher fetches Y's closure", 30*time.Second, func() (bool, string) {
		r := cli(t, bin, -1, "check", "--closure", y.Root, srv)
		return r.code == 0, r.stdout + r.stderr
	})
	step("check --closure Y: exit 0, %v after Y went upstream", time.Since(added).Round(time.Millisecond))
	// The miss log is written once a second.
	poll(t, "the miss log records Y's root as fetched", 5*time.Second, func() (bool, string) {
		m := missOf(t, bin, srv, yRoot)
		return m.Outcome == store.OutcomeFetched && m.StorePath == y.Root && m.NextCheck.IsZero(), fmt.Sprintf("%+v", m)
	})
	if log := string(p.output.Bytes()); !strings.Contains(log, "missing path appeared upstream") || !strings.Contains(log, y.Root) {
		t.Errorf("the proxy did not log the watcher finding %s", y.Root)
	}

	// Ask the upstreams rather than the cache.
	cli(t, bin, 0, "check", "--upstream", "--closure", y.Root, srv)
	r := cli(t, bin, 1, "check", "--upstream", randomHash(t), srv)
	if !strings.Contains(r.stdout, "no upstream has it") {
		t.Errorf("check --upstream of an unknown hash does not say why:\n%s", r.stdout)
	}
	step("check --upstream: Y's closure exit 0, an unknown hash exit 1")

	// Delete X's image NAR by hand: check notices.
	narFile := narPath(t, cacheDir, p.url, x.Image)
	if err := os.Remove(narFile); err != nil {
		t.Fatal(err)
	}
	r = cli(t, bin, 1, "check", "--closure", x.Root, srv)
	wantMissing(t, r, x.Image)
	viaServer := r.stdout
	step("deleted %s; check --closure X: exit 1 naming the image", filepath.Base(narFile))

	// Local mode: with --cache-dir the command opens the cache dir. A
	// server named that does not answer is an error, never a reason to
	// open a cache dir.
	p.terminate(t)
	step("server stopped (SIGTERM, exit 0)")
	r = cli(t, bin, 1, "misses", "--server="+p.url)
	if !strings.Contains(r.stderr, "no server answers at "+p.url) {
		t.Errorf("misses --server=%s with the server stopped: stderr %q, want \"no server answers at %s\"", p.url, r.stderr, p.url)
	}
	r = cli(t, bin, 1, "pin", x.Root, "--listen="+strings.TrimPrefix(p.url, "http://"))
	if !strings.Contains(r.stderr, "no server answers at "+p.url) {
		t.Errorf("pin --listen with the server stopped: stderr %q, want \"no server answers at %s\"", r.stderr, p.url)
	}
	r = cli(t, bin, 1, append([]string{"check", "--closure", x.Root, "--cache-dir", cacheDir}, upFlags...)...)
	if r.stdout != viaServer {
		t.Errorf("check in local mode says\n%s\nthe server said\n%s", r.stdout, viaServer)
	}
	cli(t, bin, 0, append([]string{"pin", x.Root, "--cache-dir", cacheDir}, upFlags...)...)
	cli(t, bin, 0, append([]string{"check", "--closure", x.Root, "--cache-dir", cacheDir}, upFlags...)...)
	step("local mode: check exit 1 naming the image, pin exit 0, check exit 0")

	p = startProxyArgs(t, bin, cacheDir, cache.PublicKey, []string{upstream})
	step("server restarted at %s", p.url)
	pins := getPins(t, p.url)
	if len(pins) != 1 || pins[0].Hash != narinfo.HashOfStorePath(x.Root) || pins[0].StorePath != x.Root {
		t.Errorf("GET /_/pins = %+v, want one pin of %s", pins, x.Root)
	}
	step("GET /_/pins lists X's root")

	// The upstream goes away: both closures come from the proxy alone.
	stopUpstream()
	copyThrough(t, "Y, upstream down", p.url, cache.PublicKey, y)
	copyThrough(t, "X, upstream down", p.url, cache.PublicKey, x)
	step("copied Y and X from the proxy alone")
	p.terminate(t)
	step("done")
}

// missOf returns the miss log row of hash, as `misses --json` lists it
// (zero when there is none).
func missOf(t *testing.T, bin, srv, hash string) store.Miss {
	t.Helper()
	r := cli(t, bin, 0, "misses", "--json", srv)
	var rows []store.Miss
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("misses --json: %v\n%s", err, r.stdout)
	}
	for _, m := range rows {
		if m.Hash == hash {
			return m
		}
	}
	return store.Miss{}
}

// cliResult is what one admin command printed and its exit code.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs the proxy binary with args and, unless want is negative, fails
// t when the exit code is not want.
func cli(t *testing.T, bin string, want int, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = childEnv()
	began := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(began)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Exited():
		r.code = exit.ExitCode()
	default:
		t.Fatalf("nix-cache-proxy %s: %v\n%s%s", strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	if testing.Verbose() {
		t.Logf("nix-cache-proxy %s: exit %d in %v", strings.Join(args, " "), r.code, r.took.Round(time.Millisecond))
	}
	if want >= 0 && r.code != want {
		t.Fatalf("nix-cache-proxy %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

// poll calls ok every 200 ms until it returns true, failing t after
// timeout with what ok last said.
func poll(t *testing.T, what string, timeout time.Duration, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, last := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v; last:\n%s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantMissing checks that check's output names storePath as missing.
func wantMissing(t *testing.T, r cliResult, storePath string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "missing") && strings.Contains(sc.Text(), storePath) {
			return
		}
	}
	t.Errorf("check output does not name %s as missing:\n%s%s", storePath, r.stdout, r.stderr)
}

// narPath returns where the proxy keeps storePath's NAR file, from the
// narinfo it serves.
func narPath(t *testing.T, cacheDir, url, storePath string) string {
	t.Helper()
	resp, err := http.Get(url + "/" + narinfo.HashOfStorePath(storePath) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ni, err := narinfo.Parse(mustRead(t, resp))
	if err != nil {
		t.Fatal(err)
	}
	name, ok := strings.CutPrefix(ni.URL, "nar/")
	if !ok || len(name) < 2 {
		t.Fatalf("narinfo of %s has URL %q", storePath, ni.URL)
	}
	file := filepath.Join(cacheDir, "nar", name[:2], name)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("NAR of %s: %v", storePath, err)
	}
	return file
}

func getPins(t *testing.T, url string) []store.Pin {
	t.Helper()
	resp, err := http.Get(url + "/_/pins")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := mustRead(t, resp)
	var pins []store.Pin
	if err := json.Unmarshal(body, &pins); err != nil {
		t.Fatalf("GET /_/pins: %v: %s", err, body)
	}
	return pins
}

func mustRead(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", resp.Request.URL, resp.Status, buf.Bytes())
	}
	return buf.Bytes()
}

// randomHash returns a store hash no cache has.
func randomHash(t *testing.T) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
