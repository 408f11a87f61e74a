package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
)

func TestNARColdThenHit(t *testing.T) {
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu)})
	file := fakeupstream.RandomBytes(1<<20 + 3)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
	nar := p.narURL(it.Hash)
	size := strconv.Itoa(len(file))

	// HEAD before any GET: known from the narinfo, not downloaded.
	head := p.do(http.MethodHead, nar)
	if head.status != http.StatusOK || head.header.Get("Content-Length") != size {
		t.Errorf("HEAD cold: %d, Content-Length %q, want 200 %s", head.status, head.header.Get("Content-Length"), size)
	}
	if n := fu.Count(it.NARPath); n != 0 {
		t.Fatalf("HEAD started a download: %d upstream NAR requests", n)
	}

	cold := p.get(nar)
	if cold.status != http.StatusOK || cold.readErr != nil || !bytes.Equal(cold.body, file) {
		t.Fatalf("cold GET: %d, %d bytes, read error %v", cold.status, len(cold.body), cold.readErr)
	}
	if got := cold.header.Get("Content-Length"); got != size {
		t.Errorf("cold GET Content-Length %q, want FileSize %s", got, size)
	}
	if ct := cold.header.Get("Content-Type"); ct != "application/x-nix-nar" {
		t.Errorf("cold GET Content-Type %q", ct)
	}
	p.settle() // the client has its last byte before the commit

	hit := p.get(nar)
	if hit.status != http.StatusOK || !bytes.Equal(hit.body, file) {
		t.Fatalf("hit: %d, %d bytes", hit.status, len(hit.body))
	}
	etag := hit.header.Get("ETag")
	if etag == "" || hit.header.Get("Accept-Ranges") != "bytes" || hit.header.Get("Content-Length") != size {
		t.Errorf("hit headers: %v", hit.header)
	}

	rng := p.get(nar, "Range", "bytes=100-199")
	if rng.status != http.StatusPartialContent || !bytes.Equal(rng.body, file[100:200]) {
		t.Errorf("Range: %d, %d bytes", rng.status, len(rng.body))
	}
	if want := "bytes 100-199/" + size; rng.header.Get("Content-Range") != want {
		t.Errorf("Content-Range %q, want %q", rng.header.Get("Content-Range"), want)
	}
	if r := p.get(nar, "If-None-Match", etag); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", r.status)
	}
	head = p.do(http.MethodHead, nar)
	if head.status != http.StatusOK || head.header.Get("Content-Length") != size || len(head.body) != 0 {
		t.Errorf("HEAD hit: %d, Content-Length %q", head.status, head.header.Get("Content-Length"))
	}
	if n := fu.Count(it.NARPath); n != 1 {
		t.Errorf("upstream NAR requests: %d, want 1: hits must come from disk", n)
	}
	if tmp := p.tempFiles(); len(tmp) != 0 {
		t.Errorf("temp files left: %q", tmp)
	}
}

// TestNARBroken covers downloads that go wrong. The client must never get a
// clean 200 with a wrong body: either an error status before the body, or a
// body cut short (an error on read). Nothing is kept, no temp file remains,
// and the next request fetches again.
func TestNARBroken(t *testing.T) {
	const size = 256 << 10
	tests := []struct {
		name  string
		fault fakeupstream.Fault
		// status is the answer when the failure is known before the
		// headers; 0 means the upstream body is frozen a quarter of the
		// way until the client has its 200, whose body must then end in
		// a read error.
		status int
		// tries is how many requests the failure costs the upstream: a
		// 5xx is retried (upstream.Options.Attempts, 3 by default).
		tries int
		// reason, if set, must be in the error header.
		reason string
	}{
		{name: "truncated", fault: fakeupstream.Fault{CutAt: size / 2}},
		{name: "truncated just before the end", fault: fakeupstream.Fault{CutAt: size - 1}},
		{name: "wrong bytes", fault: fakeupstream.Fault{Corrupt: true}},
		{name: "wrong bytes, chunked", fault: fakeupstream.Fault{Corrupt: true, Chunked: true}},
		{name: "stall mid-body", fault: fakeupstream.Fault{StallAt: size / 2}},
		{name: "too long, chunked", fault: fakeupstream.Fault{Extra: 10, Chunked: true}},
		{name: "too short, chunked", fault: fakeupstream.Fault{Body: make([]byte, size-10), Chunked: true}},
		{name: "Content-Length is not FileSize", fault: fakeupstream.Fault{Extra: 10}, status: 404},
		{name: "upstream 404", fault: fakeupstream.Fault{Status: 404}, status: 404},
		{name: "HTML page with 200", fault: fakeupstream.Fault{Body: []byte("<!DOCTYPE html><html>Log in</html>")}, status: 404,
			reason: "answered with an HTML page (text/html), not a binary cache file"},
		{name: "upstream 500", fault: fakeupstream.Fault{Status: 500}, status: 404, tries: 3},
		{name: "no headers before the timeout", fault: fakeupstream.Fault{Hang: true}, status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fu := fakeupstream.New(t)
			cfg := config{ups: ups(fu)}
			if tt.tries > 1 {
				// Room for every retry: they never outlast the timeout.
				cfg.timeout = 5 * time.Second
			}
			p := newProxy(t, cfg)
			file := fakeupstream.RandomBytes(size)
			it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
			nar := p.narURL(it.Hash)
			g := newGate()
			defer g.open()
			if tt.status == 0 {
				tt.fault.HoldAt, tt.fault.Hold = size/4, g.hold
			}
			fu.SetFault(it.NARPath, tt.fault)

			resp, err := p.client.Get(p.srv.URL + nar)
			if err != nil {
				t.Fatal(err)
			}
			g.open()
			var body []byte
			within(t, 10*time.Second, func() { body, err = io.ReadAll(resp.Body) })
			resp.Body.Close()
			switch {
			case tt.status != 0:
				if resp.StatusCode != tt.status {
					t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
				}
				if tt.fault.Status != http.StatusNotFound && resp.Header.Get(server.ErrorHeader) == "" {
					t.Errorf("no %s header", server.ErrorHeader)
				}
				if h := resp.Header.Get(server.ErrorHeader); !strings.Contains(h, tt.reason) {
					t.Errorf("%s %q, want it to say %q", server.ErrorHeader, h, tt.reason)
				}
			case resp.StatusCode != http.StatusOK:
				t.Errorf("status %d, want 200 and then an aborted body", resp.StatusCode)
			case err == nil:
				t.Errorf("client got a clean 200 with %d bytes (equal to the file: %v)", len(body), bytes.Equal(body, file))
			}
			if tmp := p.tempFiles(); len(tmp) != 0 {
				t.Errorf("temp files left after the download ended: %q", tmp)
			}
			if has, err := p.store.HasNAR(context.Background(), nar[len("/nar/"):]); has || err != nil {
				t.Errorf("HasNAR = %v, %v after a failed download", has, err)
			}

			fu.SetFault(it.NARPath, fakeupstream.Fault{})
			again := p.get(nar)
			if again.status != http.StatusOK || again.readErr != nil || !bytes.Equal(again.body, file) {
				t.Fatalf("after repair: %d, %d bytes, read error %v", again.status, len(again.body), again.readErr)
			}
			if n, want := fu.Count(it.NARPath), max(1, tt.tries)+1; n != want {
				t.Errorf("upstream NAR requests: %d, want %d", n, want)
			}
		})
	}
}

// gate freezes a fake upstream's body mid-way: Hold blocks the upstream
// handler until release, and reached is closed the first time it does.
type gate struct {
	reached, released chan struct{}
	reach, release    sync.Once
}

func newGate() *gate { return &gate{reached: make(chan struct{}), released: make(chan struct{})} }

func (g *gate) hold() {
	g.reach.Do(func() { close(g.reached) })
	<-g.released
}

// open lets the body go on; it is idempotent.
func (g *gate) open() { g.release.Do(func() { close(g.released) }) }

// TestNARConcurrent: 16 clients ask for one cold 8 MiB NAR that trickles
// in. The upstream serves it once; 15 clients arrive while the download is
// frozen mid-way and must get its first bytes from the growing temp file
// before it resumes; all get identical complete bytes.
func TestNARConcurrent(t *testing.T) {
	const (
		size    = 8 << 20
		clients = 16
		early   = 512 << 10 // what each joiner reads while the upstream is frozen
	)
	fu := fakeupstream.New(t)
	// The upstream is frozen while 15 clients join; on a loaded machine
	// that can take longer than the usual 500 ms stall timeout, which
	// would end the download the test is about.
	p := newProxy(t, config{ups: ups(fu), stall: time.Minute})
	file := fakeupstream.RandomBytes(size)
	want := sha256.Sum256(file)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
	nar := p.narURL(it.Hash)
	g := newGate()
	defer g.open() // in case the test fails before opening it
	fu.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 64 << 10, Delay: 2 * time.Millisecond, HoldAt: 2 << 20, Hold: g.hold})

	type result struct {
		i      int
		status int
		n      int64
		sum    [32]byte
		err    error
	}
	results := make(chan result, clients)
	joined := make(chan int, clients)
	fetch := func(i int) {
		res := result{i: i}
		defer func() { results <- res }()
		resp, err := p.client.Get(p.srv.URL + nar)
		if err != nil {
			res.err = err
			joined <- i
			return
		}
		defer resp.Body.Close()
		res.status = resp.StatusCode
		h := sha256.New()
		n, err := io.CopyN(h, resp.Body, early)
		joined <- i
		if err == nil {
			var m int64
			m, err = io.Copy(h, resp.Body)
			n += m
		}
		res.n, res.err = n, err
		copy(res.sum[:], h.Sum(nil))
	}

	go fetch(0)
	waitFor(t, "the upstream to send the first 2 MiB", g.reached)
	for i := 1; i < clients; i++ {
		go fetch(i)
	}
	for range clients {
		waitFor(t, "a client to read its first bytes mid-download", joined)
	}
	if n := fu.Count(it.NARPath); n != 1 {
		t.Fatalf("upstream NAR requests while frozen: %d, want 1", n)
	}
	g.open()
	for range clients {
		r := waitFor(t, "a client to finish", results)
		if r.err != nil || r.status != http.StatusOK || r.n != size || r.sum != want {
			t.Errorf("client %d: status %d, %d bytes, sha256 match %v, err %v", r.i, r.status, r.n, r.sum == want, r.err)
		}
	}
	if n := fu.Count(it.NARPath); n != 1 {
		t.Errorf("upstream NAR requests: %d, want exactly 1", n)
	}
	if hit := p.get(nar); hit.status != http.StatusOK || !bytes.Equal(hit.body, file) {
		t.Errorf("hit after the download: %d, %d bytes", hit.status, len(hit.body))
	}
}

// TestNARClientLeaves: the client whose request started a download hangs
// up mid-way; the download goes on, another client gets the whole NAR, and
// the NAR ends in the cache.
func TestNARClientLeaves(t *testing.T) {
	const size = 4 << 20
	left := make(chan struct{})
	var once sync.Once
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu), afterRequest: func(r *http.Request) {
		if r.Header.Get("X-Test-Client") == "leaver" {
			once.Do(func() { close(left) })
		}
	}})
	file := fakeupstream.RandomBytes(size)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
	nar := p.narURL(it.Hash)
	g := newGate()
	defer g.open()
	fu.SetFault(it.NARPath, fakeupstream.Fault{Chunk: 64 << 10, HoldAt: 1 << 20, Hold: g.hold})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+nar, nil)
	req.Header.Set("X-Test-Client", "leaver")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upstream to send 1 MiB", g.reached)
	if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the proxy to finish the leaver's request", left)

	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := p.client.Get(p.srv.URL + nar)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- result{body, err}
	}()
	g.open()
	r := waitFor(t, "the second client", done)
	if r.err != nil || !bytes.Equal(r.body, file) {
		t.Fatalf("second client: %d bytes, err %v", len(r.body), r.err)
	}
	p.settle()
	if hit := p.get(nar); hit.status != http.StatusOK || !bytes.Equal(hit.body, file) || hit.header.Get("ETag") == "" {
		t.Errorf("hit: %d, %d bytes, ETag %q", hit.status, len(hit.body), hit.header.Get("ETag"))
	}
	if n := fu.Count(it.NARPath); n != 1 {
		t.Errorf("upstream NAR requests: %d, want 1", n)
	}
}
