package admin_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// TestDelete: delete removes a path's narinfo and NAR; it refuses a pinned
// path, one a cached path references, one not cached, and asks for the
// admin token like every admin endpoint; --closure takes along what only
// the deleted paths reference.
func TestDelete(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "tok-0123456789")
	items := chain(e.Upstream) // top → mid → leaf
	top, mid, leaf := items[0], items[1], items[2]
	side := e.Upstream.Add(fakeupstream.Path{Name: "side", File: fakeupstream.RandomBytes(3000), Compression: "xz",
		References: []string{baseName(leaf)}})
	st, err := e.client.Prefetch(ctx, admin.PrefetchRequest{Request: prefetch.Request{Paths: []string{top.StorePath, side.StorePath}, Closure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st = e.waitJob(t, st.ID); st.Cached != 4 {
		t.Fatalf("prefetch: %+v", st)
	}
	cached := func(it *fakeupstream.Item) bool {
		_, err := e.Store.ReadNarInfo(ctx, it.Hash)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		ok, herr := e.Store.HasNAR(ctx, it.FileHash+".nar.xz")
		if herr != nil || ok != (err == nil) {
			t.Fatalf("%s: narinfo %v, NAR %v %v: not together", it.StorePath, err, ok, herr)
		}
		return err == nil
	}

	if w := e.do(http.MethodPost, "/_/delete", `{"paths":["`+top.Hash+`"]}`, "192.0.2.1:1234", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("delete without the token: %d, want 401", w.Code)
	}
	for _, tc := range []struct {
		what  string
		paths []string
		kind  error
		says  string
	}{
		{"referenced", []string{mid.StorePath}, admin.ErrConflict, "is referenced by " + top.StorePath},
		{"not cached", []string{fakeupstream.RandomHash()}, admin.ErrNotFound, "is not in the cache"},
		{"not a path", []string{"nix"}, admin.ErrBadRequest, ""},
		{"none", nil, admin.ErrBadRequest, "no paths"},
	} {
		_, err := e.client.Delete(ctx, admin.DeleteRequest{Paths: tc.paths})
		if !errors.Is(err, tc.kind) || !strings.Contains(fmtErr(err), tc.says) {
			t.Errorf("delete %s: %v, want %v saying %q", tc.what, err, tc.kind, tc.says)
		}
	}
	if _, err := e.client.Pin(ctx, []string{top.StorePath}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.Delete(ctx, admin.DeleteRequest{Paths: []string{top.StorePath}, Closure: true})
	if !errors.Is(err, admin.ErrConflict) || !strings.Contains(fmtErr(err), "unpin it first") {
		t.Errorf("delete of a pinned path: %v", err)
	}
	for _, it := range items {
		if !cached(it) {
			t.Fatalf("%s went in a refused delete", it.StorePath)
		}
	}
	if err := e.client.Unpin(ctx, []string{top.StorePath}); err != nil {
		t.Fatal(err)
	}
	res, err := e.client.Delete(ctx, admin.DeleteRequest{Paths: []string{top.StorePath}, Closure: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range res.Deleted {
		got = append(got, d.StorePath)
	}
	if want := []string{top.StorePath, mid.StorePath}; strings.Join(got, " ") != strings.Join(want, " ") || res.Bytes <= 0 {
		t.Errorf("deleted %v (%d bytes), want %v: leaf stays, side references it", got, res.Bytes, want)
	}
	for it, want := range map[*fakeupstream.Item]bool{top: false, mid: false, leaf: true, side: true} {
		if cached(it) != want {
			t.Errorf("%s cached %v after delete, want %v", it.StorePath, !want, want)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
