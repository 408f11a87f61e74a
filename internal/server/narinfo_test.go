package server_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func ups(u ...*fakeupstream.Upstream) []*fakeupstream.Upstream { return u }

// checkServed parses a served narinfo and checks it against the upstream's
// item: same path, URL rewritten to nar/<FileHash>.nar<ext>, and still
// signed by key.
func checkServed(t *testing.T, body []byte, it *fakeupstream.Item, ext string, key narinfo.PublicKey) *narinfo.Info {
	t.Helper()
	ni, err := narinfo.Parse(body)
	if err != nil {
		t.Fatalf("served narinfo does not parse: %v\n%s", err, body)
	}
	if ni.StorePath != it.StorePath {
		t.Errorf("StorePath %q, want %q", ni.StorePath, it.StorePath)
	}
	if want := "nar/" + it.FileHash + ".nar" + ext; ni.URL != want {
		t.Errorf("URL %q, want %q", ni.URL, want)
	}
	if err := narinfo.Verify(ni, []narinfo.PublicKey{key}); err != nil {
		t.Errorf("served narinfo does not verify with the upstream key: %v\n%s", err, body)
	}
	return ni
}

func TestNarInfoHitAfterMiss(t *testing.T) {
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu)})
	dep := fakeupstream.RandomHash() + "-dep"
	it := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(1000), Compression: "xz", References: []string{dep}})

	first := p.get("/" + it.Hash + ".narinfo")
	if first.status != http.StatusOK {
		t.Fatalf("miss: %d %s", first.status, first.body)
	}
	if ct := first.header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
		t.Errorf("Content-Type %q", ct)
	}
	ni := checkServed(t, first.body, it, ".xz", fu.PublicKey())
	if len(ni.References) != 1 || ni.References[0] != dep {
		t.Errorf("References %q, want [%s]", ni.References, dep)
	}
	if n := fu.Count(it.NarInfoPath); n != 1 {
		t.Fatalf("upstream asked %d times on a miss, want 1", n)
	}

	second := p.get("/" + it.Hash + ".narinfo")
	if second.status != http.StatusOK || !bytes.Equal(second.body, first.body) {
		t.Errorf("hit: %d %q, want the first answer", second.status, second.body)
	}
	head := p.do(http.MethodHead, "/"+it.Hash+".narinfo")
	if head.status != http.StatusOK || len(head.body) != 0 ||
		head.header.Get("Content-Length") != strconv.Itoa(len(first.body)) {
		t.Errorf("HEAD: %d, Content-Length %q, body %q", head.status, head.header.Get("Content-Length"), head.body)
	}
	if n := fu.Count(it.NarInfoPath); n != 1 {
		t.Errorf("upstream asked %d times, want 1: hits must come from the store", n)
	}
}

func TestNarInfoNegativeCache(t *testing.T) {
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu), negativeTTL: 300 * time.Millisecond})
	hash := fakeupstream.RandomHash()
	path := "/" + hash + ".narinfo"

	if r := p.get(path); r.status != http.StatusNotFound || r.header.Get(server.ErrorHeader) != "" {
		t.Fatalf("miss: %d, %s %q", r.status, server.ErrorHeader, r.header.Get(server.ErrorHeader))
	}
	if r := p.do(http.MethodHead, path); r.status != http.StatusNotFound {
		t.Fatalf("second miss: %d", r.status)
	}
	if n := fu.Count(path); n != 1 {
		t.Fatalf("upstream asked %d times within the negative TTL, want 1", n)
	}
	// Past the TTL the upstream is asked again; the path now exists.
	it := fu.Add(fakeupstream.Path{Hash: hash, File: []byte("nar")})
	eventually(t, "the negative entry expires", func() bool { return p.get(path).status == http.StatusOK })
	if n := fu.Count(it.NarInfoPath); n < 2 {
		t.Errorf("upstream asked %d times, want at least 2", n)
	}
}

func TestNarInfoUpstreamFailure(t *testing.T) {
	tests := []struct {
		name       string
		fault      fakeupstream.Fault
		errStatus  int
		wantStatus int
		tries      int // requests the failure costs: 5xx and 429 are retried
	}{
		{"500 default", fakeupstream.Fault{Status: 500}, 0, 404, 3},
		{"500 as 502", fakeupstream.Fault{Status: 500}, 502, 502, 3},
		{"503 as 504", fakeupstream.Fault{Status: 503}, 504, 504, 3},
		{"429", fakeupstream.Fault{Status: 429}, 0, 404, 3},
		{"hang past timeout", fakeupstream.Fault{Hang: true}, 0, 404, 1},
		{"hang past timeout as 502", fakeupstream.Fault{Hang: true}, 502, 502, 1},
		{"truncated", fakeupstream.Fault{CutAt: 10}, 0, 404, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fu := fakeupstream.New(t)
			cfg := config{ups: ups(fu), errStatus: tt.errStatus}
			if tt.tries > 1 {
				// Room for every retry: they never outlast the timeout.
				cfg.timeout = 5 * time.Second
			}
			p := newProxy(t, cfg)
			it := fu.Add(fakeupstream.Path{File: []byte("nar")})
			fu.SetFault(it.NarInfoPath, tt.fault)

			var r response
			within(t, 5*time.Second, func() { r = p.get("/" + it.Hash + ".narinfo") })
			if r.status != tt.wantStatus {
				t.Errorf("status %d, want %d", r.status, tt.wantStatus)
			}
			// One layer's words each: the server says "upstream
			// unavailable", then which narinfo and what each upstream said.
			reason := r.header.Get(server.ErrorHeader)
			if want := "narinfo " + it.Hash + ": upstream " + fu.URL() + ": "; !strings.HasPrefix(reason, want) {
				t.Errorf("%s %q, want it to start %q", server.ErrorHeader, reason, want)
			}
			if body := string(r.body); body != "upstream unavailable: "+reason+"\n" {
				t.Errorf("body %q, want %q", body, "upstream unavailable: "+reason+"\n")
			}
			// An outage is not a miss: the next request asks again, and
			// gets the path once the upstream is back.
			fu.SetFault(it.NarInfoPath, fakeupstream.Fault{})
			if r := p.get("/" + it.Hash + ".narinfo"); r.status != http.StatusOK {
				t.Errorf("after recovery: %d %s", r.status, r.body)
			}
			if n := fu.Count(it.NarInfoPath); n != tt.tries+1 {
				t.Errorf("upstream asked %d times, want %d", n, tt.tries+1)
			}
		})
	}
}

// TestNarInfoRefused covers answers the proxy must not pass on. They are
// misses (404) that say why in the error header, and nothing is stored:
// with the negative cache off, every request asks the upstream again.
func TestNarInfoRefused(t *testing.T) {
	other, _ := fakeupstream.NewKey(t, "someone-else-1")
	sameName, _ := fakeupstream.NewKey(t, fakeupstream.KeyName)
	tests := []struct {
		name string
		path fakeupstream.Path
		// serveAs, if set, serves the item's narinfo for a different hash.
		serveAs bool
		reason  string // in the error header
	}{
		{name: "signed by another key", path: fakeupstream.Path{SignWith: &other}, reason: "signature"},
		{name: "signed by another key of the same name", path: fakeupstream.Path{SignWith: &sameName}, reason: "signature"},
		{name: "unsigned", path: fakeupstream.Path{Unsigned: true}, reason: "signature"},
		{name: "StorePath of another hash", serveAs: true, reason: "asked for"},
		{name: "absolute URL on another host", path: fakeupstream.Path{URL: "http://elsewhere.invalid/nar/x.nar"}, reason: "another host"},
		{name: "protocol-relative URL on another host", path: fakeupstream.Path{URL: "//elsewhere.invalid/nar/x.nar"}, reason: "another host"},
		{name: "no StorePath in store", path: fakeupstream.Path{Extra: "StorePath: /gnu/store/" + strings.Repeat("0", 32) + "-x\n"}, reason: "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fu := fakeupstream.New(t)
			p := newProxy(t, config{ups: ups(fu), negativeTTL: -1})
			tt.path.File = []byte("nar")
			it := fu.Add(tt.path)
			hash := it.Hash
			if tt.serveAs {
				hash = fakeupstream.RandomHash()
				fu.SetFault("/"+hash+".narinfo", fakeupstream.Fault{Body: it.NarInfo})
			}
			for i := 1; i <= 2; i++ {
				r := p.get("/" + hash + ".narinfo")
				if r.status != http.StatusNotFound {
					t.Fatalf("request %d: %d, want 404\n%s", i, r.status, r.body)
				}
				if h := r.header.Get(server.ErrorHeader); !strings.Contains(h, tt.reason) {
					t.Errorf("request %d: %s %q, want it to say %q", i, server.ErrorHeader, h, tt.reason)
				}
				if n := fu.Count("/" + hash + ".narinfo"); n != i {
					t.Fatalf("request %d: upstream asked %d times: was the answer stored?", i, n)
				}
			}
		})
	}
}

// TestNarInfoRefusedRemembered: a refusal remembered by the negative
// cache is answered with its reason too, without asking the upstream.
func TestNarInfoRefusedRemembered(t *testing.T) {
	other, _ := fakeupstream.NewKey(t, "someone-else-1")
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu), negativeTTL: time.Hour})
	it := fu.Add(fakeupstream.Path{File: []byte("nar"), SignWith: &other})
	for i := 1; i <= 2; i++ {
		r := p.get("/" + it.Hash + ".narinfo")
		if h := r.header.Get(server.ErrorHeader); r.status != http.StatusNotFound || !strings.Contains(h, "signature") {
			t.Errorf("request %d: %d, %s %q; want 404 and the reason", i, r.status, server.ErrorHeader, h)
		}
	}
	if n := fu.Count(it.NarInfoPath); n != 1 {
		t.Errorf("upstream asked %d times, want 1", n)
	}
}

// TestNarInfoAccepted covers narinfos as caches in the wild write them: the
// served narinfo names the NAR by its hash, still verifies, and the NAR is
// fetched from where the upstream said.
func TestNarInfoAccepted(t *testing.T) {
	file := fakeupstream.RandomBytes(4096)
	tests := []struct {
		name    string
		path    fakeupstream.Path
		ext     string
		wantURL string // upstream URL path the NAR is fetched from
		check   func(t *testing.T, ni *narinfo.Info)
	}{
		{name: "plain", path: fakeupstream.Path{Compression: "zstd"}, ext: ".zst"},
		{name: "relative URL in a subdirectory",
			path: fakeupstream.Path{Compression: "xz", URL: "sub/dir/x.nar.xz"}, ext: ".xz", wantURL: "/sub/dir/x.nar.xz"},
		{name: "relative URL with a query",
			path: fakeupstream.Path{Compression: "xz", URL: "nar/q.nar.xz?sig=1"}, ext: ".xz", wantURL: "/nar/q.nar.xz"},
		{name: "absolute URL on the upstream itself",
			path: fakeupstream.Path{Compression: "none", URL: "ABS/abs/y.nar"}, wantURL: "/abs/y.nar"},
		{name: "missing Compression means bzip2",
			path: fakeupstream.Path{URL: "nar/z.nar.bz2"}, ext: ".bz2", wantURL: "/nar/z.nar.bz2",
			check: func(t *testing.T, ni *narinfo.Info) {
				if ni.Compression != "bzip2" {
					t.Errorf("Compression %q, want bzip2", ni.Compression)
				}
			}},
		{name: "compression taken from the field, not the URL",
			path: fakeupstream.Path{Compression: "zstd", URL: "nar/attic.nar"}, ext: ".zst", wantURL: "/nar/attic.nar"},
		{name: "unknown keys",
			path: fakeupstream.Path{Compression: "xz", Extra: "Foo: bar\nX-Upstream-Thing: 1 2 3\nSystem: x86_64-linux\n"}, ext: ".xz"},
		{name: "no FileHash and FileSize",
			path: fakeupstream.Path{Compression: "none", OmitFileHash: true, OmitFileSize: true}},
		{name: "content-addressed, unsigned",
			path: fakeupstream.Path{Compression: "none", Unsigned: true, Extra: "CA: fixed:r:sha256:" + strings.Repeat("0", 52) + "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fu := fakeupstream.New(t)
			p := newProxy(t, config{ups: ups(fu)})
			tt.path.File = file
			tt.path.URL = strings.Replace(tt.path.URL, "ABS", fu.URL(), 1)
			it := fu.Add(tt.path)
			if tt.wantURL != "" && it.NARPath != tt.wantURL {
				t.Fatalf("fake serves the NAR at %q, want %q", it.NARPath, tt.wantURL)
			}
			r := p.get("/" + it.Hash + ".narinfo")
			if r.status != http.StatusOK {
				t.Fatalf("narinfo: %d %s", r.status, r.body)
			}
			ni := checkServed(t, r.body, it, tt.ext, fu.PublicKey())
			if tt.check != nil {
				tt.check(t, ni)
			}
			nar := p.get("/" + ni.URL)
			if nar.status != http.StatusOK || nar.readErr != nil || !bytes.Equal(nar.body, file) {
				t.Fatalf("NAR: %d, %d bytes, read error %v", nar.status, len(nar.body), nar.readErr)
			}
			if n := fu.Count(it.NARPath); n != 1 {
				t.Errorf("upstream NAR requests at %s: %d, want 1", it.NARPath, n)
			}
		})
	}
}

func TestNarInfoFailover(t *testing.T) {
	other, _ := fakeupstream.NewKey(t, "someone-else-1")
	tests := []struct {
		name    string
		first   fakeupstream.Fault
		badSig  bool          // the first's narinfo is signed by an untrusted key
		timeout time.Duration // client timeout
		hedge   time.Duration
		winner  int
	}{
		// A long hedge: a slow machine must not ask the second.
		{name: "first has it", hedge: 10 * time.Second, winner: 0},
		{name: "first 404", first: fakeupstream.Fault{Status: 404}, winner: 1},
		{name: "first 500", first: fakeupstream.Fault{Status: 500}, winner: 1},
		{name: "first badly signed", badSig: true, winner: 1},
		// The timeout is far longer than the bound below: only the hedge
		// can get the second's answer in time.
		{name: "first hangs", first: fakeupstream.Fault{Hang: true}, timeout: 20 * time.Second,
			hedge: 100 * time.Millisecond, winner: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fus := ups(fakeupstream.New(t), fakeupstream.New(t))
			file := fakeupstream.RandomBytes(2048)
			first := fakeupstream.Path{File: file, Compression: "xz"}
			if tt.badSig {
				first.SignWith = &other
			}
			items := []*fakeupstream.Item{fus[0].Add(first), nil}
			items[1] = fus[1].Add(fakeupstream.Path{Hash: items[0].Hash, File: file, Compression: "xz"})
			fus[0].SetFault(items[0].NarInfoPath, tt.first)
			p := newProxy(t, config{ups: fus, timeout: tt.timeout, hedge: tt.hedge})

			var r response
			within(t, 5*time.Second, func() { r = p.get("/" + items[0].Hash + ".narinfo") })
			if r.status != http.StatusOK {
				t.Fatalf("narinfo: %d %s", r.status, r.body)
			}
			ni := checkServed(t, r.body, items[tt.winner], ".xz", fus[tt.winner].PublicKey())
			if nar := p.get("/" + ni.URL); nar.status != http.StatusOK || !bytes.Equal(nar.body, file) {
				t.Fatalf("NAR: %d, %d bytes", nar.status, len(nar.body))
			}
			for i, fu := range fus {
				want := 0
				if i == tt.winner {
					want = 1
				}
				if n := fu.Count(items[i].NARPath); n != want {
					t.Errorf("upstream %d: %d NAR requests, want %d", i, n, want)
				}
			}
			if tt.winner == 0 && fus[1].Total() != 0 {
				t.Errorf("second upstream asked although the first answered")
			}
		})
	}
}

// TestNarInfoConcurrent: clients asking for one path at once cost the
// upstream one request, whether its answer is accepted or refused. The
// upstream answer is frozen until the first request reached it, so the
// others arrive while that lookup is in flight.
func TestNarInfoConcurrent(t *testing.T) {
	const clients = 8
	fu := fakeupstream.New(t)
	p := newProxy(t, config{ups: ups(fu), timeout: 10 * time.Second})
	it := fu.Add(fakeupstream.Path{File: []byte("nar")})
	bad := "/" + fakeupstream.RandomHash() + ".narinfo"
	good, refused := newGate(), newGate()
	defer good.open()
	defer refused.open()
	fu.SetFault(it.NarInfoPath, fakeupstream.Fault{HoldAt: 10, Hold: good.hold})
	fu.SetFault(bad, fakeupstream.Fault{Body: []byte("not a narinfo"), HoldAt: 1, Hold: refused.hold})

	for _, tt := range []struct {
		path string
		g    *gate
		want int
	}{
		{it.NarInfoPath, good, http.StatusOK},
		{bad, refused, http.StatusNotFound},
	} {
		statuses := make(chan int, clients)
		get := func() {
			resp, err := p.client.Get(p.srv.URL + tt.path)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}
		go get()
		waitFor(t, "the upstream to be asked", tt.g.reached)
		for range clients - 1 {
			go get()
		}
		tt.g.open()
		for range clients {
			if s := waitFor(t, "a client", statuses); s != tt.want {
				t.Errorf("%s: status %d, want %d", tt.path, s, tt.want)
			}
		}
		if n := fu.Count(tt.path); n != 1 {
			t.Errorf("%s: upstream asked %d times, want 1", tt.path, n)
		}
	}
}

// TestNarInfoHostileUpstream: answers no real cache gives. An HTML page
// (a captive portal) is the upstream failing: the lookup answers with the
// reason and is asked again next time. A 200 that does not parse is a
// refusal, counted among the verification failures.
func TestNarInfoHostileUpstream(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		reason      string // in the error header
		refusals    float64
		upstreamErr float64
	}{
		{name: "HTML page with 200", body: "<!DOCTYPE html>\n<html><body>Log in to the Wi-Fi</body></html>\n",
			reason: "answered with an HTML page (text/html), not a binary cache file", upstreamErr: 1},
		{name: "JSON with 200", body: `{"error": "no such path"}`,
			reason: "StorePath missing", refusals: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, fu, _ := metricsProxy(t, config{negativeTTL: -1})
			hash := fakeupstream.RandomHash()
			fu.SetFault("/"+hash+".narinfo", fakeupstream.Fault{Body: []byte(tt.body)})
			r := p.get("/" + hash + ".narinfo")
			if r.status != http.StatusNotFound || !strings.Contains(r.header.Get(server.ErrorHeader), tt.reason) {
				t.Errorf("%d, %s %q; want 404 and %q", r.status, server.ErrorHeader, r.header.Get(server.ErrorHeader), tt.reason)
			}
			m := p.metrics
			check(t,
				want{"verification_failures{narinfo}", testutil.ToFloat64(m.VerifyFailures.WithLabelValues("narinfo")), tt.refusals},
				want{"upstream_requests{narinfo,error}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(fu.URL(), "narinfo", "error")), tt.upstreamErr},
				want{"upstream_requests{narinfo,not_found}", testutil.ToFloat64(m.UpstreamRequests.WithLabelValues(fu.URL(), "narinfo", "not_found")), 0},
			)
		})
	}
}
