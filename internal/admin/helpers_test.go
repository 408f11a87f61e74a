package admin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cachetest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// env is the proxy as serve wires it: a real store, miss log, cache,
// prefetch manager and admin service, behind server.New with the admin API
// mounted, on httptest, over one fake upstream.
type env struct {
	*cachetest.Env
	svc     *admin.Service
	handler http.Handler // the whole server's
	srv     *httptest.Server
	client  *admin.Client
}

func newEnv(t *testing.T, token string) *env {
	t.Helper()
	return newEnvOpts(t, admin.HandlerOptions{Token: token})
}

func newEnvOpts(t *testing.T, hopts admin.HandlerOptions) *env {
	t.Helper()
	return newEnvWith(t, envOptions{handler: hopts})
}

type envOptions struct {
	handler    admin.HandlerOptions
	keepLatest []evict.Rule
}

func newEnvWith(t *testing.T, opts envOptions) *env {
	t.Helper()
	token := opts.handler.Token
	e := cachetest.New(t, prefetch.Options{})
	vm := verify.NewManager(e.Store, verify.Options{})
	t.Cleanup(vm.Close)
	svc := admin.NewService(e.Store, e.Misses, e.Cache, e.Prefetch, evict.New(e.Store, evict.Config{KeepLatest: opts.keepLatest}), vm, warm.NewBoard())
	h, err := server.New(server.Config{Cache: e.Cache, Admin: admin.Handler(svc, opts.handler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client, err := admin.NewClient(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return &env{Env: e, svc: svc, handler: h, srv: srv, client: client}
}

// flush writes the miss log now.
func (e *env) flush(t *testing.T) {
	t.Helper()
	if err := e.Misses.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitJob polls the job through the client until it has finished.
func (e *env) waitJob(t *testing.T, id string) prefetch.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.client.Job(context.Background(), id)
		if err != nil {
			t.Fatalf("Job(%s): %v", id, err)
		}
		if st.State != prefetch.StateRunning {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still running: %+v", id, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// baseName is a store path's name without the store directory, as
// References lists it.
func baseName(it *fakeupstream.Item) string {
	return strings.TrimPrefix(it.StorePath, narinfo.StoreDir+"/")
}

// chain adds top → mid → leaf to the upstream and returns them in that order.
func chain(u *fakeupstream.Upstream) []*fakeupstream.Item {
	leaf := u.Add(fakeupstream.Path{Name: "leaf", File: fakeupstream.RandomBytes(3000), Compression: "xz"})
	mid := u.Add(fakeupstream.Path{Name: "mid", File: fakeupstream.RandomBytes(3000), Compression: "xz",
		References: []string{baseName(leaf)}})
	top := u.Add(fakeupstream.Path{Name: "top", File: fakeupstream.RandomBytes(3000), Compression: "xz",
		References: []string{baseName(mid)}})
	return []*fakeupstream.Item{top, mid, leaf}
}

// do sends a request straight to the server's handler, from remote, and
// returns the recorded response. It is what the CLI sends: Host names the
// loopback address it dialed, and writes are JSON.
func (e *env) do(method, path, body, remote, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if method != http.MethodGet && method != http.MethodHead {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Host = "127.0.0.1:5575"
	r.RemoteAddr = remote
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return w
}
