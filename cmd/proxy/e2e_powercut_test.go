//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/powercuttest"
)

// powerCutRounds is how many cuts TestPowerCut makes: 20 by default,
// NIX_CACHE_PROXY_POWERCUT_ROUNDS for more (bench/powercut.sh).
func powerCutRounds(t *testing.T) int { return envCount(t, "NIX_CACHE_PROXY_POWERCUT_ROUNDS", 20) }

// TestPowerCut runs the proxy binary on a cache dir that loses, at each
// cut, everything no fsync made durable (internal/powercuttest): clients
// fetch a cold closure of many small paths with references, a builder
// uploads paths, eviction (a bound below the paths' total, and gc through
// the API) and recompression run, and at a seeded random moment the power
// goes (every other cut tearing unsynced pages too). The proxy restarts on
// what survived, and then: verify --deep is clean; every narinfo served
// names a NAR that is served (refilled if need be) with its FileHash, and
// whose references are served; every upload acknowledged before the cut
// is still there, byte for byte; and no client ever got a complete body
// that is not its narinfo's.
func TestPowerCut(t *testing.T) {
	bin := e2eBinary(t, false)
	rounds, seed := powerCutRounds(t), crashSeed(t)
	t.Logf("%d cuts, seed %d (NIX_CACHE_PROXY_CRASH_SEED=%d replays the choices)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e9955bd1e995))

	up := fakeupstream.New(t)
	sk := up.SecretKey()
	paths := powerCutClosure(up, rng)
	builder := fakeupstream.New(t) // never asked by the proxy: its paths come only by upload
	var uploads []*fakeupstream.Item
	build := func(n int) {
		for range n {
			ref := strings.TrimPrefix(paths[rng.IntN(len(paths))].StorePath, "/nix/store/")
			uploads = append(uploads, builder.Add(fakeupstream.Path{Name: fmt.Sprintf("built%d", len(uploads)),
				File: fakeupstream.RandomBytes(2<<10 + rng.IntN(24<<10)), Compression: "none",
				References: []string{ref}, SignWith: &sk}))
		}
	}
	build(8)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(powerCutToken), 0o600)
	args := []string{"--max-size", "2MiB", "--negative-ttl", "0", "--write-token-file", tokenFile}

	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	os.Mkdir(mnt, 0o755)
	gen := func(n int) (live, state string) {
		dir := filepath.Join(base, strconv.Itoa(n))
		live, state = filepath.Join(dir, "live"), filepath.Join(dir, "state")
		os.MkdirAll(live, 0o755)
		return live, state
	}
	mount := func(n int) *powercuttest.FS {
		live, state := gen(n)
		pc, err := powercuttest.Mount(live, state, mnt)
		if errors.Is(err, powercuttest.ErrUnavailable) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		// Cleanups run last first: this one after the proxy's kill.
		t.Cleanup(func() { pc.Cut(); pc.Unmount() })
		return pc
	}

	acked := map[string]*fakeupstream.Item{} // uploads acknowledged before a cut
	var stats powercuttest.Stats
	for round := range rounds {
		pc := mount(round)
		p := startProxyArgs(t, bin, mnt, up.PublicKey().String(), []string{up.URL()}, args...)
		if round > 0 {
			checkAfterCut(t, bin, p.url, paths, acked)
		}
		build(3) // new each round, besides the old ones uploaded again
		w := &powerCutWorkload{url: p.url, paths: paths, uploads: uploads, rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))}
		w.start()
		time.Sleep(time.Duration(30+rng.IntN(1500)) * time.Millisecond)
		w.cut.Store(true)
		pc.Cut()
		p.cmd.Process.Kill()
		<-p.done
		res := w.wait()
		for _, bad := range res.wrong {
			t.Errorf("cut %d: %s", round, bad)
		}
		for _, it := range res.acked {
			acked[it.Hash] = it
		}
		if err := pc.Unmount(); err != nil {
			t.Fatal(err)
		}
		s := pc.Stats()
		stats.Writes += s.Writes
		stats.FileSyncs += s.FileSyncs
		stats.DirSyncs += s.DirSyncs
		stats.NameChanges += s.NameChanges
		var tear *rand.Rand
		if round%2 == 1 {
			tear = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		}
		next, _ := gen(round + 1)
		if err := pc.Survivors(next, tear); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	pc := mount(rounds)
	p := startProxyArgs(t, bin, mnt, up.PublicKey().String(), []string{up.URL()}, args...)
	checkAfterCut(t, bin, p.url, paths, acked)
	p.terminate(t)
	pc.Cut()
	pc.Unmount()
	t.Logf("%d cuts: %d uploads acknowledged and followed; %d writes, %d file syncs, %d directory syncs, %d name changes",
		rounds, len(acked), stats.Writes, stats.FileSyncs, stats.DirSyncs, stats.NameChanges)
}

const powerCutToken = "power-cut-token-0123456789"

// powerCutClosure publishes a closure of small paths, each referring to a
// few earlier ones; some are compressible and large enough to be
// recompressed.
func powerCutClosure(up *fakeupstream.Upstream, rng *rand.Rand) []*fakeupstream.Item {
	var items []*fakeupstream.Item
	for i := range 80 {
		var refs []string
		for range min(i, rng.IntN(4)) {
			refs = append(refs, strings.TrimPrefix(items[rng.IntN(i)].StorePath, "/nix/store/"))
		}
		file := fakeupstream.RandomBytes(1<<10 + rng.IntN(40<<10))
		if i%8 == 0 {
			// Compressible, ≥ 64 KiB: recompressed to zstd when idle.
			file = bytes.Repeat(fakeupstream.RandomBytes(512), 128+rng.IntN(128))
		}
		items = append(items, up.Add(fakeupstream.Path{Name: fmt.Sprintf("p%d", i), File: file, Compression: "none", References: refs}))
	}
	return items
}

// checkAfterCut checks the proxy that restarted on what a cut left.
func checkAfterCut(t *testing.T, bin, url string, paths []*fakeupstream.Item, acked map[string]*fakeupstream.Item) {
	t.Helper()
	if r := cli(t, bin, -1, "verify", "--deep", "--server="+url); r.code != 0 {
		t.Fatalf("verify after a cut: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, it := range paths {
		if err := checkServed(url, it, true); err != nil {
			t.Error(err)
		}
	}
	for _, it := range acked {
		if err := checkServed(url, it, true); err != nil {
			t.Errorf("acknowledged upload: %v", err)
		}
	}
}

// checkServed fetches it's narinfo and the NAR it names; the NAR must
// match FileHash and unpack to it's NAR, and its references must be
// served. A narinfo that is not served is an error only when must.
func checkServed(url string, it *fakeupstream.Item, must bool) error {
	text, status, err := get(url + "/" + it.Hash + ".narinfo")
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		if must {
			return fmt.Errorf("%s: narinfo %d", it.StorePath, status)
		}
		return nil
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return fmt.Errorf("%s: %v", it.StorePath, err)
	}
	file, status, err := get(url + "/" + ni.URL)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s: its narinfo names %s, which answers %d", it.StorePath, ni.URL, status)
	}
	if sum := sha256.Sum256(file); ni.FileHash == nil || !bytes.Equal(sum[:], ni.FileHash.Digest()) {
		return fmt.Errorf("%s: %s (%d bytes) does not match the narinfo's FileHash", it.StorePath, ni.URL, len(file))
	}
	nar, err := unpackNAR(file, ni.Compression)
	if err != nil || !bytes.Equal(nar, it.File) {
		return fmt.Errorf("%s: %s does not unpack to the path's NAR (%v)", it.StorePath, ni.URL, err)
	}
	for _, ref := range ni.References {
		if _, status, err := get(url + "/" + ref[:32] + ".narinfo"); err != nil || status != http.StatusOK {
			return fmt.Errorf("%s: its reference %s is not served (%d, %v)", it.StorePath, ref, status, err)
		}
	}
	return nil
}

func unpackNAR(file []byte, compression string) ([]byte, error) {
	switch compression {
	case "none":
		return file, nil
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(file))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return io.ReadAll(d)
	}
	return nil, fmt.Errorf("compression %q", compression)
}

var powerCutClient = &http.Client{Timeout: 30 * time.Second}

func get(url string) ([]byte, int, error) {
	resp, err := powerCutClient.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return body, resp.StatusCode, err
}

// powerCutWorkload is one round's traffic, cut short by the power cut.
type powerCutWorkload struct {
	url     string
	paths   []*fakeupstream.Item
	uploads []*fakeupstream.Item
	rng     *rand.Rand  // used before start only
	cut     atomic.Bool // set just before the cut: what is answered after it is not counted

	wg  sync.WaitGroup
	mu  sync.Mutex
	res powerCutResult
}

type powerCutResult struct {
	wrong []string
	acked []*fakeupstream.Item
}

func (w *powerCutWorkload) start() {
	// Clients fetching the closure as Nix does, narinfo then NAR.
	for range 4 {
		order := w.rng.Perm(len(w.paths))
		w.go_(func() {
			for _, i := range order {
				if !w.download(w.paths[i]) {
					return
				}
			}
		})
	}
	// A builder uploading, NAR then narinfo, as nix copy --to does.
	order := w.rng.Perm(len(w.uploads))
	w.go_(func() {
		for _, i := range order {
			it := w.uploads[i]
			if w.put(it.NARPath, it.File) == 0 {
				return
			}
			switch s := w.put(it.NarInfoPath, it.NarInfo); {
			case s == 0:
				return
			case s/100 == 2:
				if !w.cut.Load() {
					w.mu.Lock()
					w.res.acked = append(w.res.acked, it)
					w.mu.Unlock()
				}
			}
		}
	})
	// gc passes, besides the eviction the bound starts.
	w.go_(func() {
		for adminPost(powerCutClient, w.url+"/_/gc", `{}`) == http.StatusOK {
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func (w *powerCutWorkload) go_(fn func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
}

// put sends a write with the token and returns the status (0: no answer).
func (w *powerCutWorkload) put(path string, body []byte) int {
	req, _ := http.NewRequest(http.MethodPut, w.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+powerCutToken)
	resp, err := powerCutClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// download checks a complete body against the narinfo it came by; it
// returns false once the proxy does not answer.
func (w *powerCutWorkload) download(it *fakeupstream.Item) bool {
	err := checkServed(w.url, it, false)
	if err == nil {
		return true
	}
	var ue interface{ Timeout() bool }
	if errors.As(err, &ue) || w.cut.Load() {
		return false // gone, or cut short: a cut body is fine
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.res.wrong = append(w.res.wrong, err.Error())
	return true
}

func (w *powerCutWorkload) wait() powerCutResult {
	w.wg.Wait()
	return w.res
}
