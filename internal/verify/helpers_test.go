package verify_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cachetest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// env is a real store, cache and fake upstream (cachetest) served by the
// real server on httptest, and a verify manager on the store.
type env struct {
	*cachetest.Env
	srv *httptest.Server
	mgr *verify.Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := cachetest.New(t, prefetch.Options{})
	h, err := server.New(server.Config{Cache: e.Cache})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	mgr := verify.NewManager(e.Store, verify.Options{})
	t.Cleanup(mgr.Close)
	return &env{Env: e, srv: srv, mgr: mgr}
}

// fill publishes p upstream and brings it into the cache through a
// client's GETs, as Nix would; it returns the item and the NAR's name.
func (e *env) fill(t *testing.T, p fakeupstream.Path) (*fakeupstream.Item, string) {
	t.Helper()
	it := e.Upstream.Add(p)
	entry, err := e.Cache.Lookup(context.Background(), it.Hash)
	if err != nil {
		t.Fatalf("lookup %s: %v", it.StorePath, err)
	}
	if got := e.get(t, "/nar/"+entry.NARName); string(got) != string(it.File) {
		t.Fatalf("first GET of %s: %d bytes, not the upstream's %d", entry.NARName, len(got), len(it.File))
	}
	e.Settle(t)
	return it, entry.NARName
}

// get GETs a URL path from the proxy and returns a 200's body.
func (e *env) get(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return body
}

// narPath is where the store keeps the NAR file called name.
func (e *env) narPath(name string) string {
	return filepath.Join(e.Dir, "nar", name[:2], name)
}

// run runs one pass to its end and returns its status with every problem.
func (e *env) run(t *testing.T, req verify.Request) verify.Status {
	t.Helper()
	st, err := e.mgr.Start(req)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.State == verify.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("verify still running: %+v", st)
		}
		if st, err = e.mgr.Wait(context.Background(), st.ID, time.Second, 0); err != nil {
			t.Fatal(err)
		}
		if st.State == verify.StateRunning {
			time.Sleep(10 * time.Millisecond) // problems came in; wait for the end
		}
	}
	if st.From != 0 || len(st.Problems) != st.ProblemsTotal {
		t.Fatalf("status from 0 has %d of %d problems", len(st.Problems), st.ProblemsTotal)
	}
	return st
}

// kinds maps each problem's name to its kind.
func kinds(st verify.Status) map[string]string {
	out := make(map[string]string)
	for _, p := range st.Problems {
		out[p.Name] = p.Kind
	}
	return out
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
