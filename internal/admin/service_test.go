package admin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

func TestCheck(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	items := chain(e.Upstream) // top → mid → leaf
	top, mid, leaf := items[0], items[1], items[2]
	closure := admin.CheckRequest{Paths: []string{top.StorePath}, Closure: true}

	// Nothing cached yet: only the asked path is known, by its hash.
	res, err := e.client.Check(ctx, closure)
	if err != nil {
		t.Fatal(err)
	}
	want := admin.CheckResult{OK: false, Paths: []admin.PathCheck{{Path: top.Hash}}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("check before prefetch (-want +got):\n%s", diff)
	}

	st, err := e.client.Prefetch(ctx, admin.PrefetchRequest{Request: prefetch.Request{Paths: []string{top.StorePath}, Closure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st = e.waitJob(t, st.ID); st.State != prefetch.StateDone {
		t.Fatalf("prefetch: %+v", st)
	}
	res, err = e.client.Check(ctx, closure)
	if err != nil {
		t.Fatal(err)
	}
	want = admin.CheckResult{OK: true, Paths: []admin.PathCheck{
		{Path: top.StorePath, NarInfo: true, NAR: true},
		{Path: mid.StorePath, NarInfo: true, NAR: true},
		{Path: leaf.StorePath, NarInfo: true, NAR: true},
	}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("check after prefetch (-want +got):\n%s", diff)
	}

	// Without Closure only the path itself is checked.
	res, err = e.client.Check(ctx, admin.CheckRequest{Paths: []string{top.Hash}})
	if err != nil || !res.OK || len(res.Paths) != 1 {
		t.Errorf("check without closure: %+v, %v", res, err)
	}

	// An operator deletes mid's NAR file by hand.
	ent, err := e.Cache.LocalEntry(ctx, mid.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(e.Dir, "nar", ent.NARName[:2], ent.NARName)); err != nil {
		t.Fatal(err)
	}
	res, err = e.client.Check(ctx, closure)
	if err != nil {
		t.Fatal(err)
	}
	want.OK = false
	want.Paths[1].NAR = false
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("check after the NAR was deleted (-want +got):\n%s", diff)
	}
	if n := e.Upstream.Count(mid.NARPath); n != 1 {
		t.Errorf("check fetched the NAR again (%d downloads)", n)
	}

	// Upstream: where the paths are offered, nothing kept.
	gone := fakeupstream.RandomHash()
	e.Upstream.SetFault("/"+gone+".narinfo", fakeupstream.Fault{Status: http.StatusServiceUnavailable})
	missing := fakeupstream.RandomHash()
	res, err = e.client.Check(ctx, admin.CheckRequest{Paths: []string{mid.StorePath, missing, gone}, Closure: true, Upstream: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Paths) != 4 {
		t.Fatalf("upstream check: %+v, want 4 paths", res)
	}
	wantUp := []admin.PathCheck{
		{Path: mid.StorePath, NarInfo: true, NAR: true, Upstream: e.Upstream.URL()},
		{Path: missing},
		{Path: gone, Error: res.Paths[2].Error},
		{Path: leaf.StorePath, NarInfo: true, NAR: true, Upstream: e.Upstream.URL()},
	}
	if diff := cmp.Diff(admin.CheckResult{OK: false, Paths: wantUp}, res); diff != "" {
		t.Errorf("upstream check (-want +got):\n%s", diff)
	}
	if res.Paths[2].Error == "" {
		t.Errorf("an upstream outage is reported without an error: %+v", res.Paths[2])
	}
	res, err = e.client.Check(ctx, admin.CheckRequest{Paths: []string{top.Hash}, Closure: true, Upstream: true})
	if err != nil || !res.OK || len(res.Paths) != 3 {
		t.Errorf("upstream check of the whole closure: %+v, %v", res, err)
	}
}

func TestPins(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	items := chain(e.Upstream)
	top := items[0]
	other := fakeupstream.RandomHash()

	st, err := e.client.Pin(ctx, []string{top.StorePath})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Request.Closure {
		t.Errorf("pin started a job without its closure: %+v", st.Request)
	}
	if st = e.waitJob(t, st.ID); st.State != prefetch.StateDone || st.Cached != 3 {
		t.Errorf("pin's prefetch: %+v", st)
	}
	pins, err := e.client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || pins[0].Hash != top.Hash || pins[0].StorePath != top.StorePath || pins[0].Since.IsZero() {
		t.Errorf("Pins = %+v", pins)
	}

	err = e.client.Unpin(ctx, []string{other})
	if !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("unpin of a path not pinned: %v, want ErrNotFound", err)
	}
	// Unpinning a pinned and an unknown path: the pinned one goes, the
	// unknown one is still reported.
	err = e.client.Unpin(ctx, []string{top.Hash, other})
	if !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("unpin with one unknown path: %v, want ErrNotFound", err)
	}
	if pins, err := e.client.Pins(ctx); err != nil || len(pins) != 0 {
		t.Errorf("Pins after unpin = %+v, %v", pins, err)
	}
}

func TestMissesFilter(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	now := time.Now().UTC()
	h1, h2, h3 := fakeupstream.RandomHash(), fakeupstream.RandomHash(), fakeupstream.RandomHash()
	_, err := e.Store.RecordMisses(ctx, []store.MissEvent{
		{Hash: h1, At: now.Add(-time.Minute), Asked: true, Outcome: store.OutcomeFetched},
		{Hash: h2, At: now.Add(-2 * time.Hour), Asked: true, Outcome: store.OutcomeNotFound},
		{Hash: h3, At: now.Add(-3 * time.Minute), Asked: true, Outcome: store.OutcomeNotFound},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		filter admin.MissFilter
		want   []string
	}{
		{admin.MissFilter{}, []string{h1, h3, h2}},
		{admin.MissFilter{Outcome: store.OutcomeNotFound}, []string{h3, h2}},
		{admin.MissFilter{Since: time.Hour}, []string{h1, h3}},
		{admin.MissFilter{Since: time.Hour, Outcome: store.OutcomeNotFound}, []string{h3}},
		{admin.MissFilter{Outcome: store.OutcomeUpstreamError}, nil},
	}
	for _, tt := range tests {
		for name, get := range map[string]func() ([]store.Miss, error){
			"service": func() ([]store.Miss, error) { return e.svc.Misses(ctx, tt.filter) },
			"client":  func() ([]store.Miss, error) { return e.client.Misses(ctx, tt.filter) },
		} {
			rows, err := get()
			if err != nil {
				t.Fatalf("%s Misses(%+v): %v", name, tt.filter, err)
			}
			var got []string
			for _, m := range rows {
				got = append(got, m.Hash)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s Misses(%+v) (-want +got):\n%s", name, tt.filter, diff)
			}
		}
	}
}

// TestClientRoundTrip drives every Client method against the handler over
// HTTP, with a token, and checks it sees what the Service sees.
func TestClientRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "tok")
	items := chain(e.Upstream)
	top, mid := items[0], items[1]
	missing := fakeupstream.RandomHash()

	// Two clients' misses: mid's narinfo (its NAR not fetched), and a path
	// no upstream has.
	if _, err := e.Cache.NarInfo(ctx, mid.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Cache.NarInfo(ctx, missing); err == nil {
		t.Fatal("NarInfo of a missing path succeeded")
	}
	e.flush(t)
	misses, err := e.client.Misses(ctx, admin.MissFilter{})
	if err != nil {
		t.Fatal(err)
	}
	svcMisses, err := e.svc.Misses(ctx, admin.MissFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(svcMisses, misses); diff != "" || len(misses) != 2 {
		t.Errorf("client Misses differ from the service's (-service +client):\n%s", diff)
	}

	// Prefetch the miss log: mid's NAR comes in; the missing path fails
	// the job.
	st, err := e.client.Prefetch(ctx, admin.PrefetchRequest{Misses: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.Request.Paths, mid.Hash) || !slices.Contains(st.Request.Paths, missing) {
		t.Errorf("prefetch of the misses asked for %v", st.Request.Paths)
	}
	st = e.waitJob(t, st.ID)
	if st.State != prefetch.StateFailed || st.Cached != 1 || len(st.Failed) != 1 || st.Failed[0].Path != missing {
		t.Errorf("prefetch of the misses: %+v", st)
	}
	if n := e.Upstream.Count(mid.NARPath); n != 1 {
		t.Errorf("mid's NAR downloaded %d times, want 1", n)
	}

	pinned, err := e.client.Pin(ctx, []string{top.StorePath})
	if err != nil {
		t.Fatal(err)
	}
	pinned = e.waitJob(t, pinned.ID)
	if pinned.State != prefetch.StateDone || pinned.Skipped != 1 || pinned.Cached != 3 {
		t.Errorf("pin job: %+v, want done, mid skipped", pinned)
	}

	jobs, err := e.client.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svcJobs, _ := e.svc.Jobs(ctx)
	if diff := cmp.Diff(svcJobs, jobs); diff != "" || len(jobs) != 2 || jobs[0].ID != st.ID || jobs[1].ID != pinned.ID {
		t.Errorf("Jobs (-service +client):\n%s", diff)
	}
	job, err := e.client.Job(ctx, pinned.ID)
	if err != nil || job.ID != pinned.ID {
		t.Errorf("Job(%s) = %+v, %v", pinned.ID, job, err)
	}
	if _, err := e.client.Job(ctx, "nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("Job of an unknown id: %v, want ErrNotFound", err)
	}
	waited, err := e.client.WaitJob(ctx, pinned.ID, time.Minute)
	if err != nil || waited.ID != pinned.ID || waited.State != prefetch.StateDone {
		t.Errorf("WaitJob(%s) = %+v, %v", pinned.ID, waited, err)
	}
	if _, err := e.client.WaitJob(ctx, "nope", time.Second); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("WaitJob of an unknown id: %v, want ErrNotFound", err)
	}

	pins, err := e.client.Pins(ctx)
	if err != nil || len(pins) != 1 || pins[0].Hash != top.Hash {
		t.Errorf("Pins = %+v, %v", pins, err)
	}
	res, err := e.client.Check(ctx, admin.CheckRequest{Paths: []string{top.StorePath}, Closure: true})
	if err != nil || !res.OK || len(res.Paths) != 3 {
		t.Errorf("Check = %+v, %v", res, err)
	}
	if err := e.client.Unpin(ctx, []string{top.StorePath}); err != nil {
		t.Errorf("Unpin: %v", err)
	}
	if pins, err := e.client.Pins(ctx); err != nil || len(pins) != 0 {
		t.Errorf("Pins after Unpin = %+v, %v", pins, err)
	}

	// Bad requests come back as ErrBadRequest.
	if _, err := e.client.Check(ctx, admin.CheckRequest{Paths: []string{"nope"}}); !errors.Is(err, admin.ErrBadRequest) {
		t.Errorf("Check of a bad path: %v, want ErrBadRequest", err)
	}
	if _, err := e.client.Misses(ctx, admin.MissFilter{Outcome: "lost"}); !errors.Is(err, admin.ErrBadRequest) {
		t.Errorf("Misses with a bad outcome: %v, want ErrBadRequest", err)
	}

	// A wrong token is neither ErrNoServer nor silent.
	bad, err := admin.NewClient(e.srv.URL, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Pins(ctx); err == nil || errors.Is(err, admin.ErrNoServer) {
		t.Errorf("Pins with a wrong token: %v", err)
	}
}

func TestClientNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := admin.NewClient("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"Misses":   func() error { _, err := c.Misses(ctx, admin.MissFilter{}); return err },
		"Prefetch": func() error { _, err := c.Prefetch(ctx, admin.PrefetchRequest{Misses: true}); return err },
		"Job":      func() error { _, err := c.Job(ctx, "x"); return err },
		"Jobs":     func() error { _, err := c.Jobs(ctx); return err },
		"WaitJob":  func() error { _, err := c.WaitJob(ctx, "x", time.Second); return err },
		"Pin":      func() error { _, err := c.Pin(ctx, []string{"x"}); return err },
		"Unpin":    func() error { return c.Unpin(ctx, []string{"x"}) },
		"Pins":     func() error { _, err := c.Pins(ctx); return err },
		"Check":    func() error { _, err := c.Check(ctx, admin.CheckRequest{Paths: []string{"x"}}); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, admin.ErrNoServer) {
			t.Errorf("%s: %v, want ErrNoServer", name, err)
		}
	}
}

func TestNewClientRejects(t *testing.T) {
	for _, base := range []string{"", "localhost:5000", "ftp://host", "http://", "://x"} {
		if _, err := admin.NewClient(base, ""); err == nil {
			t.Errorf("NewClient(%q) accepted", base)
		}
	}
	if _, err := admin.NewClient("http://127.0.0.1:5000/", ""); err != nil {
		t.Errorf("NewClient with a trailing slash: %v", err)
	}
}

// TestUnpinBadPathChangesNothing checks that a request rejected as bad
// unpins nothing, whatever the order of its paths.
func TestUnpinBadPathChangesNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	h := fakeupstream.RandomHash()
	if err := e.Store.PutPin(ctx, store.Pin{Hash: h, StorePath: h, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Unpin(ctx, []string{h, "not-a-path"}); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("Unpin with a bad path: %v, want ErrBadRequest", err)
	}
	if pins, err := e.svc.Pins(ctx); err != nil || len(pins) != 1 {
		t.Errorf("a rejected unpin changed the pins: %+v, %v", pins, err)
	}
}

// backend is the method set Service and Client share.
type backend interface {
	Check(context.Context, admin.CheckRequest) (admin.CheckResult, error)
	Pin(context.Context, []string) (prefetch.Status, error)
	Unpin(context.Context, []string) error
	Prefetch(context.Context, admin.PrefetchRequest) (prefetch.Status, error)
	WaitJob(context.Context, string, time.Duration) (prefetch.Status, error)
	Misses(context.Context, admin.MissFilter) ([]store.Miss, error)
}

// TestErrorWording: an error reads as one reason in the user's words,
// whether from the Service or through the HTTP API and Client, and still
// matches its sentinel. It once read "bad request: admin: bad request:
// prefetch: not a store path or hash: ...", every layer adding its name.
func TestErrorWording(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	const badPath = `"foo" is not a store path (want /nix/store/<hash>-<name>, <hash>-<name> or <hash>)`
	tests := []struct {
		name string
		call func(b backend) error
		kind error
		want string
	}{
		{"check", func(b backend) error { _, err := b.Check(ctx, admin.CheckRequest{Paths: []string{"foo"}}); return err }, admin.ErrBadRequest, badPath},
		{"check nothing", func(b backend) error { _, err := b.Check(ctx, admin.CheckRequest{}); return err }, admin.ErrBadRequest, "no paths given"},
		{"pin", func(b backend) error { _, err := b.Pin(ctx, []string{"foo"}); return err }, admin.ErrBadRequest, badPath},
		{"unpin", func(b backend) error { return b.Unpin(ctx, []string{"foo"}) }, admin.ErrBadRequest, badPath},
		{"prefetch", func(b backend) error {
			_, err := b.Prefetch(ctx, admin.PrefetchRequest{Request: prefetch.Request{Paths: []string{"foo"}}})
			return err
		}, admin.ErrBadRequest, badPath},
		{"no job", func(b backend) error { _, err := b.WaitJob(ctx, "nope", 0); return err }, admin.ErrNotFound, `no prefetch job "nope"`},
		{"outcome", func(b backend) error { _, err := b.Misses(ctx, admin.MissFilter{Outcome: "lost"}); return err },
			admin.ErrBadRequest, `outcome "lost" is not one of fetched, not-found, upstream-error, refused-signature, refused-narinfo, refused-size, refused-hash`},
	}
	for _, tt := range tests {
		for via, b := range map[string]backend{"service": e.svc, "client": e.client} {
			t.Run(tt.name+"/"+via, func(t *testing.T) {
				err := tt.call(b)
				if !errors.Is(err, tt.kind) || err.Error() != tt.want {
					t.Errorf("error %q (matches %v: %v), want %q", err, tt.kind, errors.Is(err, tt.kind), tt.want)
				}
			})
		}
	}
}

// TestMissesRightAfterAMiss: `misses` right after a client's miss lists
// it, without waiting for the miss log's next write (a second, here an
// hour).
func TestMissesRightAfterAMiss(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "")
	h := fakeupstream.RandomHash()
	resp, err := http.Get(e.srv.URL + "/" + h + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET narinfo: %d, want 404", resp.StatusCode)
	}
	rows, err := e.client.Misses(ctx, admin.MissFilter{Outcome: store.OutcomeNotFound})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Hash != h || rows[0].Count != 1 {
		t.Errorf("misses right after the miss: %+v, want one row for %s", rows, h)
	}
}
