package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
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
	bin := e2eBinary(t, true)
	storage := startFleet(t)
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

// startReplica starts a proxy on storage that advertises its own URL to
// its peers, with a short fill lease so a dead holder is taken over fast.
func startReplica(t *testing.T, bin, storage, publicKey, upstream string) *proxyProcess {
	t.Helper()
	addr := freeAddr(t)
	return startProxyAt(t, bin, addr, t.TempDir(), publicKey, []string{upstream},
		"--storage", storage, "--advertise-url", "http://"+addr, "--fill-lease-ttl", "2s")
}

// fetchResult is one client's GET of a NAR.
type fetchResult struct {
	sum       [32]byte
	n         int64
	firstByte time.Duration
	err       error
}

func fetchNAR(url string) fetchResult {
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		return fetchResult{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fetchResult{err: fmt.Errorf("status %s", resp.Status)}
	}
	h := sha256.New()
	var r fetchResult
	buf := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		return fetchResult{err: err}
	}
	r.firstByte = time.Since(start)
	h.Write(buf)
	n, err := io.Copy(h, resp.Body)
	r.n, r.err = n+1, err
	copy(r.sum[:], h.Sum(nil))
	return r
}

// TestFleetColdImageOnce: a cold 48 MiB image asked from three proxies on
// one bucket at once costs the upstream one fetch; the proxy holding the
// fill lease fetches it, the other two stream it from that proxy's
// download in progress, and every client gets the same, right bytes
// while the (slow) upstream is still sending.
func TestFleetColdImageOnce(t *testing.T) {
	bin := e2eBinary(t, false)
	storage := startFleet(t)
	up := fakeupstream.New(t)
	image := fakeupstream.RandomBytes(48 << 20)
	item := up.Add(fakeupstream.Path{File: image, Compression: "none"})
	// About 3 s for the whole image: long enough that every client
	// starts before the fill ends.
	up.SetFault(item.NARPath, fakeupstream.Fault{Chunk: 1 << 20, Delay: 60 * time.Millisecond})
	pub := up.PublicKey().String()
	var replicas []*proxyProcess
	for range 3 {
		replicas = append(replicas, startReplica(t, bin, storage, pub, up.URL()))
	}
	// Each proxy learns the narinfo first, as Nix clients do.
	var narURL string
	for _, p := range replicas {
		resp, err := http.Get(p.url + "/" + item.Hash + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("narinfo from %s: %s", p.url, resp.Status)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if u, ok := strings.CutPrefix(line, "URL: "); ok {
				narURL = u
			}
		}
	}
	want := sha256.Sum256(image)
	results := make([]fetchResult, 6)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = fetchNAR(replicas[i%3].url + "/" + narURL)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.sum != want || r.n != int64(len(image)) {
			t.Errorf("client %d (proxy %d): %d bytes, right bytes %v, err %v", i, i%3, r.n, r.sum == want, r.err)
		}
		t.Logf("client %d (proxy %d): first byte after %v", i, i%3, r.firstByte.Round(time.Millisecond))
		if r.firstByte > time.Second {
			t.Errorf("client %d waited %v for its first byte", i, r.firstByte)
		}
	}
	if n := up.Count(item.NARPath); n != 1 {
		t.Errorf("the upstream served the image %d times, want 1", n)
	}
	// One proxy took the lease; the other two joined its download.
	var taken, joined int
	for _, p := range replicas {
		m := scrape(t, p.url)
		if strings.Contains(m, `nix_cache_proxy_fleet_fill_leases_total{event="taken"} 1`) {
			taken++
		}
		if strings.Contains(m, `nix_cache_proxy_fleet_fill_joins_total{result="ok"} 1`) {
			joined++
		}
	}
	if taken != 1 || joined != 2 {
		t.Errorf("%d proxies took a lease and %d joined a peer's fill; want 1 and 2", taken, joined)
	}
	// The image went to the bucket once: the proxies that joined the
	// fill did not upload it too.
	uploads := 0
	for _, p := range replicas {
		for _, l := range strings.Split(scrape(t, p.url), "\n") {
			if strings.HasPrefix(l, `nix_cache_proxy_bucket_requests_total{operation="CreateMultipartUpload"`) && !strings.HasSuffix(l, " 0") {
				uploads++
			}
		}
	}
	if uploads != 1 {
		t.Errorf("%d proxies uploaded the image to the bucket, want 1", uploads)
	}
	// Now a hit on every proxy, from the bucket.
	for _, p := range replicas {
		if r := fetchNAR(p.url + "/" + narURL); r.err != nil || r.sum != want {
			t.Errorf("hit on %s: %v", p.url, r.err)
		}
	}
	if n := up.Count(item.NARPath); n != 1 {
		t.Errorf("after the hits the upstream served the image %d times, want 1", n)
	}

	// What a hit costs in bucket requests, on a proxy past its first
	// lookup of the path: a narinfo hit is answered from its own index.
	p := replicas[0]
	before := bucketRequests(t, p.url)
	for range 10 {
		resp, err := http.Get(p.url + "/" + item.Hash + ".narinfo")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("narinfo hit: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	afterInfo := bucketRequests(t, p.url)
	if r := fetchNAR(p.url + "/" + narURL); r.err != nil || r.sum != want {
		t.Fatalf("NAR hit: %v", r.err)
	}
	afterNAR := bucketRequests(t, p.url)
	t.Logf("bucket requests: %.1f per narinfo hit, %d per NAR hit", float64(afterInfo-before)/10, afterNAR-afterInfo)
	if afterInfo != before {
		t.Errorf("10 narinfo hits cost %d bucket requests, want 0", afterInfo-before)
	}
	if d := afterNAR - afterInfo; d != 2 {
		t.Errorf("a NAR hit cost %d bucket requests, want 2 (HEAD, ranged GET)", d)
	}
}

// bucketRequests sums nix_cache_proxy_bucket_requests_total on a proxy.
func bucketRequests(t *testing.T, base string) int {
	t.Helper()
	total := 0
	for _, l := range strings.Split(scrape(t, base), "\n") {
		if strings.HasPrefix(l, "nix_cache_proxy_bucket_requests_total{") {
			f := strings.Fields(l)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			total += n
		}
	}
	return total
}

// TestFleetHolderKilled: the proxy filling an image is killed with
// SIGKILL midway; its fill lease expires, another proxy takes it over,
// and clients that retry get the whole image.
func TestFleetHolderKilled(t *testing.T) {
	bin := e2eBinary(t, false)
	storage := startFleet(t)
	up := fakeupstream.New(t)
	image := fakeupstream.RandomBytes(24 << 20)
	item := up.Add(fakeupstream.Path{File: image, Compression: "none"})
	up.SetFault(item.NARPath, fakeupstream.Fault{Chunk: 1 << 20, Delay: 150 * time.Millisecond})
	pub := up.PublicKey().String()
	a := startReplica(t, bin, storage, pub, up.URL())
	b := startReplica(t, bin, storage, pub, up.URL())
	narURL := "nar/" + item.FileHash + ".nar"
	for _, p := range []*proxyProcess{a, b} {
		resp, err := http.Get(p.url + "/" + item.Hash + ".narinfo")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("narinfo from %s: %v %v", p.url, resp, err)
		}
		resp.Body.Close()
	}
	want := sha256.Sum256(image)
	first := make(chan fetchResult, 2)
	go func() { first <- fetchNAR(a.url + "/" + narURL) }()
	time.Sleep(500 * time.Millisecond) // a holds the lease
	go func() { first <- fetchNAR(b.url + "/" + narURL) }()
	time.Sleep(1 * time.Second) // b has joined a's fill
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	for range 2 {
		if r := <-first; r.err == nil && r.sum == want {
			t.Logf("a client got the whole image despite the kill")
		}
	}
	// Retry on the survivor, as Nix does: b takes the lease over once it
	// expires, fetches the image again and serves it whole.
	var r fetchResult
	for try := range 5 {
		if r = fetchNAR(b.url + "/" + narURL); r.err == nil {
			break
		}
		t.Logf("retry %d: %v", try, r.err)
		time.Sleep(500 * time.Millisecond)
	}
	if r.err != nil || r.sum != want {
		t.Fatalf("after retries: %d bytes, right %v, err %v", r.n, r.sum == want, r.err)
	}
	if n := up.Count(item.NARPath); n != 2 {
		t.Errorf("the upstream served the image %d times, want 2 (a's cut fill, b's after the takeover)", n)
	}
	metrics := scrape(t, b.url)
	if !strings.Contains(metrics, `nix_cache_proxy_fleet_fill_leases_total{event="taken-over"} 1`) {
		t.Errorf("b's metrics do not count the takeover:\n%s", grepLines(metrics, "fleet"))
	}
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
