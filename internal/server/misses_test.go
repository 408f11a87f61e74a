package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// missRow flushes the miss log and returns hash's row (ok false if none).
func (p *proxy) missRow(hash string) (store.Miss, bool) {
	p.t.Helper()
	if err := p.misses.Flush(p.t.Context()); err != nil {
		p.t.Fatal(err)
	}
	rows, err := p.store.Misses(p.t.Context())
	if err != nil {
		p.t.Fatal(err)
	}
	for _, m := range rows {
		if m.Hash == hash {
			return m, true
		}
	}
	return store.Miss{}, false
}

// TestMissOutcomes: the miss log tells a path no upstream has from one an
// upstream had and the proxy refused, and says why in the words of the
// X-Nix-Cache-Proxy-Error header the client got.
func TestMissOutcomes(t *testing.T) {
	other, _ := fakeupstream.NewKey(t, "up-other-1")
	tests := []struct {
		name string
		// add publishes the path on up and returns it; nil asks for a
		// path nobody has.
		add         func(up *fakeupstream.Upstream) *fakeupstream.Item
		nar         bool // the refusal comes with the NAR, not the narinfo
		wantOutcome string
		wantReason  string // a part of the reason; "" wants none
	}{{
		name:        "not found",
		wantOutcome: store.OutcomeNotFound,
	}, {
		name: "untrusted signature",
		add: func(up *fakeupstream.Upstream) *fakeupstream.Item {
			return up.Add(fakeupstream.Path{File: []byte("nar"), Compression: "none", SignWith: &other})
		},
		wantOutcome: store.OutcomeRefusedSignature,
		wantReason:  `signed by ["up-other-1"]`,
	}, {
		name: "another path's narinfo",
		add: func(up *fakeupstream.Upstream) *fakeupstream.Item {
			it := up.Add(fakeupstream.Path{File: []byte("nar"), Compression: "none"})
			wrong := up.Add(fakeupstream.Path{File: []byte("another nar"), Compression: "none"})
			up.SetFault(it.NarInfoPath, fakeupstream.Fault{Body: wrong.NarInfo})
			return it
		},
		wantOutcome: store.OutcomeRefusedNarInfo,
		wantReason:  "got StorePath",
	}, {
		name: "NAR not its hash",
		add: func(up *fakeupstream.Upstream) *fakeupstream.Item {
			it := up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(4096), Compression: "none"})
			up.SetFault(it.NARPath, fakeupstream.Fault{Corrupt: true})
			return it
		},
		nar:         true,
		wantOutcome: store.OutcomeRefusedHash,
		wantReason:  "sha256",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := fakeupstream.New(t)
			p := newProxy(t, config{ups: []*fakeupstream.Upstream{up}, misses: true})
			hash := fakeupstream.RandomHash()
			if tt.add != nil {
				hash = tt.add(up).Hash
			}
			r := p.get("/" + hash + ".narinfo")
			if tt.nar {
				wantStatus(t, "narinfo", r, http.StatusOK)
				r = p.get(p.narURL(hash))
			}
			if r.status == http.StatusOK && r.readErr == nil {
				// (A NAR streamed as it comes is cut off instead.)
				t.Fatalf("status 200 and a whole body, want a failure")
			}
			m, ok := p.missRow(hash)
			if !ok {
				t.Fatalf("no miss row for %s", hash)
			}
			if m.Outcome != tt.wantOutcome {
				t.Errorf("outcome %q, want %q", m.Outcome, tt.wantOutcome)
			}
			header := r.header.Get(server.ErrorHeader)
			switch {
			case tt.wantReason == "":
				if m.Reason != "" || header != "" {
					t.Errorf("reason %q, header %q; want none", m.Reason, header)
				}
			case !strings.Contains(m.Reason, tt.wantReason):
				t.Errorf("reason %q lacks %q", m.Reason, tt.wantReason)
			case !tt.nar && m.Reason != header:
				t.Errorf("reason %q, but the client's %s said %q", m.Reason, server.ErrorHeader, header)
			}
		})
	}
}

// TestUploadLeavesMissLog: a path a client missed, then uploaded, is no
// longer in the miss log, and the watcher does not ask the upstream about
// it again (it went on asking, backing off to hourly, for every CI upload).
func TestUploadLeavesMissLog(t *testing.T) {
	e := newUploadEnv(t, func(c *config) { c.misses = true })
	it := e.builder.Add(fakeupstream.Path{File: []byte("an uploaded NAR"), Compression: "none", Unsigned: true})

	wantStatus(t, "GET narinfo before the upload", e.get(it.NarInfoPath), http.StatusNotFound)
	if m, ok := e.missRow(it.Hash); !ok || m.Outcome != store.OutcomeNotFound {
		t.Fatalf("miss row before the upload: %+v (found %v), want not-found", m, ok)
	}
	asked := e.up.Count(it.NarInfoPath)
	wantStatus(t, "PUT NAR", e.pushNAR(it), http.StatusCreated)
	wantStatus(t, "PUT narinfo", e.pushNarInfo(it), http.StatusCreated)

	// Before the flush, as `misses` reads it, and after.
	rows, err := e.misses.Misses(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rows {
		if m.Hash == it.Hash {
			t.Errorf("unflushed miss log still lists the uploaded path: %+v", m)
		}
	}
	if m, ok := e.missRow(it.Hash); ok {
		t.Errorf("miss log still lists the uploaded path: %+v", m)
	}
	mgr := prefetch.NewManager(e.cache, prefetch.Options{})
	t.Cleanup(mgr.Close)
	prefetch.NewWatcher(e.store, e.cache, mgr, prefetch.WatchOptions{}).CheckDue(t.Context(), time.Now().Add(24*time.Hour))
	wantStatus(t, "GET narinfo after the upload", e.get(it.NarInfoPath), http.StatusOK)
	if n := e.up.Count(it.NarInfoPath) - asked; n != 0 {
		t.Errorf("the upstream was asked %d more times about the uploaded path", n)
	}
}

// TestUploadDuringLookup: a client's lookup that was asking the upstream
// while the path was uploaded, and ends without it, leaves no miss row:
// the path is stored, so nothing is missing and no one asks again.
func TestUploadDuringLookup(t *testing.T) {
	e := newUploadEnv(t, func(c *config) { c.misses, c.timeout = true, 5*time.Second })
	it := e.builder.Add(fakeupstream.Path{File: []byte("uploaded while asked for"), Compression: "none", Unsigned: true})
	// The upstream answers with another path's narinfo (refused), once
	// the test lets it.
	wrong := e.up.Add(fakeupstream.Path{File: []byte("another path"), Compression: "none"})
	g := newGate()
	defer g.open()
	e.up.SetFault(it.NarInfoPath, fakeupstream.Fault{Body: wrong.NarInfo, HoldAt: 1, Hold: g.hold})
	status := make(chan int, 1)
	go func() {
		resp, err := e.client.Get(e.srv.URL + it.NarInfoPath)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	waitFor(t, "the upstream to be asked", g.reached)
	wantStatus(t, "PUT NAR", e.pushNAR(it), http.StatusCreated)
	wantStatus(t, "PUT narinfo", e.pushNarInfo(it), http.StatusCreated)
	g.open()
	if s := waitFor(t, "the lookup", status); s != http.StatusNotFound {
		t.Fatalf("lookup answered %d, want 404 (its upstream answer was refused)", s)
	}
	if m, ok := e.missRow(it.Hash); ok {
		t.Errorf("miss log lists the path uploaded during the lookup: %+v", m)
	}
}
