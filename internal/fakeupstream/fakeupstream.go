// Package fakeupstream is a fake Nix binary cache on httptest for tests: it
// serves signed narinfos and NAR files for the paths a test adds, counts
// the requests it gets per URL path, and misbehaves on demand (statuses,
// hangs, truncated, corrupt, stalled or trickled bodies).
//
// Only _test.go files should import it.
package fakeupstream

import (
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// KeyName is the name of every fake upstream's signing key.
const KeyName = "fake-upstream-1"

// Upstream is a fake binary cache. Its methods are safe for concurrent use.
type Upstream struct {
	t      testing.TB
	secret signature.SecretKey
	public signature.PublicKey

	mu      sync.Mutex
	srv     *httptest.Server
	addr    string
	done    chan struct{} // closed when the server stops: hanging handlers return
	files   map[string][]byte
	faults  map[string]Fault
	counts  map[string]int
	sent    map[string]int64 // body bytes written, by path
	info    []byte
	stopped bool
}

// New starts a fake upstream that t stops at cleanup. Its nix-cache-info
// says StoreDir /nix/store.
func New(t testing.TB) *Upstream {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(KeyName, rand.Reader)
	if err != nil {
		t.Fatalf("fakeupstream: generate key: %v", err)
	}
	u := &Upstream{
		t:      t,
		secret: sk,
		public: pk,
		files:  make(map[string][]byte),
		faults: make(map[string]Fault),
		counts: make(map[string]int),
		sent:   make(map[string]int64),
		info:   []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"),
	}
	u.start(nil)
	t.Cleanup(u.Close)
	return u
}

func (u *Upstream) start(ln net.Listener) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	u.done = make(chan struct{})
	srv.Start()
	// Restart listens on the same address, so addr is set once and read
	// without the lock.
	if u.addr == "" {
		u.addr = srv.Listener.Addr().String()
	}
	u.srv, u.stopped = srv, false
}

// URL is the cache's base URL, "http://127.0.0.1:port".
func (u *Upstream) URL() string { return "http://" + u.addr }

// PublicKey is the key the upstream signs with.
func (u *Upstream) PublicKey() signature.PublicKey { return u.public }

// SecretKey is the key the upstream signs with.
func (u *Upstream) SecretKey() signature.SecretKey { return u.secret }

// Close stops the server: hanging handlers return, connections close, and
// the address refuses connections until Restart. It is idempotent.
func (u *Upstream) Close() {
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		return
	}
	u.stopped = true
	srv := u.srv
	close(u.done)
	u.mu.Unlock()
	srv.CloseClientConnections()
	srv.Close()
}

// Restart serves again on the address Close released, with the same paths,
// faults and counts.
func (u *Upstream) Restart() {
	u.t.Helper()
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		u.t.Fatalf("fakeupstream: listen on %s again: %v", u.addr, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.start(ln)
}

// Count returns how many requests (any method) reached urlPath, such as
// "/<hash>.narinfo" or an Item's NARPath.
func (u *Upstream) Count(urlPath string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[urlPath]
}

// Sent returns how many body bytes the upstream wrote for urlPath (a
// redirect's target counts under its own path).
func (u *Upstream) Sent(urlPath string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sent[urlPath]
}

// Total returns how many requests reached the upstream.
func (u *Upstream) Total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.counts {
		n += c
	}
	return n
}

// SetFault makes requests for urlPath misbehave as f says; the zero Fault
// restores normal service.
func (u *Upstream) SetFault(urlPath string, f Fault) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if f.isZero() {
		delete(u.faults, urlPath)
		return
	}
	u.faults[urlPath] = f
}

// SetFile serves body at urlPath (no fault applied means 200).
func (u *Upstream) SetFile(urlPath string, body []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[urlPath] = body
}

// RandomHash returns a random store path hash part.
func RandomHash() string {
	b := make([]byte, 20)
	rand.Read(b)
	return nixbase32.EncodeToString(b)
}

// RandomBytes returns n random bytes, for NAR bodies.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
