package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// crashRounds is how many kill -9 rounds TestCrashSafety runs: 30 by
// default, NIX_CACHE_PROXY_CRASH_ROUNDS for more (bench/crash.sh).
func crashRounds(t *testing.T) int { return envCount(t, "NIX_CACHE_PROXY_CRASH_ROUNDS", 30) }

// envCount is the count in the environment variable name, def if unset.
func envCount(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a count", name, v)
	}
	return n
}

// crashSeed is the seed of the rounds' choices (what is asked, when the kill
// comes): NIX_CACHE_PROXY_CRASH_SEED replays a run; by default a fresh one,
// logged so a failure can be replayed.
func crashSeed(t *testing.T) uint64 {
	if v := os.Getenv("NIX_CACHE_PROXY_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("NIX_CACHE_PROXY_CRASH_SEED=%q: want a number", v)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// missSurvives is how long after its answer a miss must be on disk: the
// miss log is written once a second (misslog.Options.FlushInterval), so a
// kill loses at most the last second's misses and the flush in progress;
// the second of slack is for a loaded machine.
const missSurvives = 2 * time.Second

// TestCrashSafety kills the proxy binary (SIGKILL) at seeded random moments
// while clients download cold NARs, prefetch jobs run, eviction passes run
// (a bound far below the paths' total, plus gc through the API), misses
// are recorded and paths pinned; it restarts the proxy on the same cache
// dir each time and checks that verify --deep is clean, that no client
// ever got a complete body whose bytes are not its narinfo's (a cut
// connection is fine), that every acknowledged pin survives, and that every
// miss older than missSurvives survives.
func TestCrashSafety(t *testing.T) {
	bin := e2eBinary(t, false)
	rounds, seed := crashRounds(t), crashSeed(t)
	t.Logf("%d rounds, seed %d (NIX_CACHE_PROXY_CRASH_SEED=%d replays the choices)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	up := fakeupstream.New(t)
	var items []*fakeupstream.Item
	for i := range 24 {
		size := 64<<10 + rng.IntN(512<<10)
		it := up.Add(fakeupstream.Path{Name: fmt.Sprintf("p%d", i), File: fakeupstream.RandomBytes(size), Compression: "none"})
		// Trickled, so downloads are in flight when the kill comes.
		up.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 32 << 10, Delay: 5 * time.Millisecond})
		items = append(items, it)
	}
	cacheDir := t.TempDir()
	args := []string{"--max-size", "3MiB", "--negative-ttl", "0", "--miss-recheck", "0"}

	var (
		misses   = map[string]time.Time{} // hash → when its 404 was answered
		pins     = map[string]bool{}      // acknowledged pins
		complete int                      // complete NAR bodies checked
	)
	for round := range rounds {
		p := startProxyArgs(t, bin, cacheDir, up.PublicKey().String(), []string{up.URL()}, args...)
		srv := "--server=" + p.url
		if round > 0 {
			// The state the last kill left.
			if r := cli(t, bin, -1, "verify", "--deep", srv); r.code != 0 {
				t.Fatalf("round %d: verify after a kill: exit %d\n%s%s", round, r.code, r.stdout, r.stderr)
			}
			checkPins(t, p.url, pins)
			checkMisses(t, p.url, misses)
		}

		w := &crashWorkload{url: p.url, items: items, rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))}
		w.start()
		killAfter := time.Duration(20+rng.IntN(800)) * time.Millisecond
		if rng.IntN(6) == 0 {
			// Now and then a longer round, so some misses are old enough
			// to have been written when the kill comes.
			killAfter = time.Duration(2300+rng.IntN(500)) * time.Millisecond
		}
		time.Sleep(killAfter)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		killedAt := time.Now()
		res := w.wait()
		for _, bad := range res.wrong {
			t.Errorf("round %d: %s", round, bad)
		}
		complete += res.complete
		for h, at := range res.misses {
			// Younger ones may be lost with the buffer: not followed.
			if killedAt.Sub(at) > missSurvives {
				misses[h] = at
			}
		}
		for h := range res.pins {
			pins[h] = true
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	p := startProxyArgs(t, bin, cacheDir, up.PublicKey().String(), []string{up.URL()}, args...)
	cli(t, bin, 0, "verify", "--deep", "--server="+p.url)
	checkPins(t, p.url, pins)
	checkMisses(t, p.url, misses)
	// Everything is still served, byte for byte (refilled where evicted).
	for _, it := range items[:4] {
		if got := getBody(t, p.url+"/nar/"+it.FileHash+".nar"); !bytes.Equal(got, it.File) {
			t.Errorf("%s after the rounds: %d bytes, not the upstream's", it.StorePath, len(got))
		}
	}
	p.terminate(t)
	t.Logf("%d rounds: %d complete NAR bodies checked, %d pins and %d misses followed across kills", rounds, complete, len(pins), len(misses))
}

// crashWorkload is one round's traffic, cut short by the kill.
type crashWorkload struct {
	url   string
	items []*fakeupstream.Item
	rng   *rand.Rand // used before start only: goroutines get their own choices

	wg  sync.WaitGroup
	mu  sync.Mutex
	res crashResult
}

type crashResult struct {
	complete int
	wrong    []string
	misses   map[string]time.Time
	pins     map[string]bool
}

func (w *crashWorkload) start() {
	w.res = crashResult{misses: map[string]time.Time{}, pins: map[string]bool{}}
	hc := &http.Client{Timeout: 30 * time.Second}
	// Cold and warm downloads by clients.
	for range 6 {
		order := w.rng.Perm(len(w.items))
		w.go_(func() {
			for _, i := range order {
				if !w.download(hc, w.items[i]) {
					return // the proxy is gone
				}
			}
		})
	}
	// Misses of paths no upstream has.
	hashes := make([]string, 20)
	for i := range hashes {
		hashes[i] = fakeupstream.RandomHash()
	}
	w.go_(func() {
		for _, h := range hashes {
			resp, err := hc.Get(w.url + "/" + h + ".narinfo")
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				w.mu.Lock()
				w.res.misses[h] = time.Now()
				w.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	// A prefetch job, a pin (which prefetches too), and gc passes.
	pre := w.items[w.rng.IntN(len(w.items))]
	pin := w.items[w.rng.IntN(len(w.items))]
	w.go_(func() {
		adminPost(hc, w.url+"/_/prefetch", `{"paths": ["`+pre.StorePath+`"]}`)
		if adminPost(hc, w.url+"/_/pins", `{"paths": ["`+pin.StorePath+`"]}`) == http.StatusOK {
			w.mu.Lock()
			w.res.pins[pin.Hash] = true
			w.mu.Unlock()
		}
		for adminPost(hc, w.url+"/_/gc", `{}`) == http.StatusOK {
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func (w *crashWorkload) go_(fn func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
}

// download asks for it as Nix does and checks a complete body; it returns
// false once the proxy does not answer.
func (w *crashWorkload) download(hc *http.Client, it *fakeupstream.Item) bool {
	resp, err := hc.Get(w.url + "/" + it.Hash + ".narinfo")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return true
	}
	resp, err = hc.Get(w.url + "/nar/" + it.FileHash + ".nar")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return err == nil // a cut body is fine
	}
	if resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.res.complete++
	if sha256.Sum256(body) != sha256.Sum256(it.File) {
		w.res.wrong = append(w.res.wrong, fmt.Sprintf("%s: a complete 200 body of %d bytes is not its narinfo's NAR", it.StorePath, len(body)))
	}
	return true
}

func (w *crashWorkload) wait() crashResult {
	w.wg.Wait()
	return w.res
}

// adminPost sends a JSON write to the admin API and returns the status (0
// when the proxy did not answer).
func adminPost(hc *http.Client, url, body string) int {
	resp, err := hc.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func checkPins(t *testing.T, url string, want map[string]bool) {
	t.Helper()
	have := map[string]bool{}
	for _, p := range getPins(t, url) {
		have[p.Hash] = true
	}
	for h := range want {
		if !have[h] {
			t.Errorf("pin %s was acknowledged and is gone after a kill", h)
		}
	}
}

// checkMisses checks that every miss followed (answered more than
// missSurvives before a kill) is in the miss log.
func checkMisses(t *testing.T, url string, misses map[string]time.Time) {
	t.Helper()
	var rows []store.Miss
	if err := json.Unmarshal(getBody(t, url+"/_/misses"), &rows); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range rows {
		have[m.Hash] = true
	}
	for h := range misses {
		if !have[h] {
			t.Errorf("miss %s, answered more than %v before a kill, is not in the miss log", h, missSurvives)
		}
	}
}

func getBody(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return mustRead(t, resp)
}
