package verify_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

// TestRepairRefetchesProtected: --repair fetches a bad NAR the cache must
// keep (pinned or kept: Options.Protected) again at once, instead of
// leaving the pinned closure with a hole (issue 20: "repaired …
// (dropped)", exit 0, then `check --closure` said "NAR not cached"); when
// that fetch fails, or the NAR was uploaded and has no upstream, the
// problem stays unrepaired, so verify exits non-zero.
func TestRepairRefetchesProtected(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	pinned, pinnedName := e.fill(t, fakeupstream.Path{Name: "pinned", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	down, downName := e.fill(t, fakeupstream.Path{Name: "down", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	plain, plainName := e.fill(t, fakeupstream.Path{Name: "plain", File: fakeupstream.RandomBytes(5000), Compression: "xz"})
	// An upload: a NAR with no upstream.
	upName := fakeupstream.RandomHash() + fakeupstream.RandomHash()[:20] + ".nar"
	upHash := fakeupstream.RandomHash()
	w, err := e.Store.CreateNAR(ctx, upName)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("uploaded bytes"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	upSum := sha256.Sum256([]byte("uploaded bytes"))
	text := fmt.Appendf(nil, "StorePath: /nix/store/%s-up\nURL: nar/%s\nCompression: none\nFileSize: 14\n", upHash, upName)
	if err := e.Store.ClaimUpload(ctx, upHash, text, upName, store.NARSource{Hash: upHash, Upstream: store.UploadedUpstream, Size: 14, SHA256: upSum[:]}); err != nil {
		t.Fatal(err)
	}
	// A second upload whose file went missing.
	goneName := fakeupstream.RandomHash() + fakeupstream.RandomHash()[:20] + ".nar"
	goneHash := fakeupstream.RandomHash()
	if w, err = e.Store.CreateNAR(ctx, goneName); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("uploaded bytes"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	text = fmt.Appendf(nil, "StorePath: /nix/store/%s-gone\nURL: nar/%s\nCompression: none\nFileSize: 14\n", goneHash, goneName)
	if err := e.Store.ClaimUpload(ctx, goneHash, text, goneName, store.NARSource{Hash: goneHash, Upstream: store.UploadedUpstream, Size: 14, SHA256: upSum[:]}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.narPath(goneName)); err != nil {
		t.Fatal(err)
	}
	for _, it := range []struct {
		name string
		file []byte
	}{{pinnedName, pinned.File}, {downName, down.File}, {plainName, plain.File}, {upName, []byte("uploaded bytes")}} {
		bad := bytes.Clone(it.file)
		bad[len(bad)/2] ^= 1
		writeFile(t, e.narPath(it.name), bad)
	}
	e.Upstream.SetFault(down.NARPath, fakeupstream.Fault{Status: http.StatusBadGateway})

	mgr := verify.NewManager(e.Store, verify.Options{
		Protected: func(context.Context) (map[string]bool, error) {
			return map[string]bool{pinnedName: true, downName: true, upName: true, goneName: true}, nil
		},
		Refetch: func(ctx context.Context, name string) error { return e.Cache.EnsureNAR(ctx, name, nil) },
	})
	t.Cleanup(mgr.Close)
	e.mgr = mgr
	st := e.run(t, verify.Request{Repair: true})
	if st.ProblemsTotal != 5 || st.Unrepaired != 3 || st.Sound() {
		t.Errorf("status %+v: want 5 bad, 3 not repaired (the NAR whose upstream fails, the uploads)", st)
	}
	for _, pr := range st.Problems {
		var ok bool
		switch pr.Name {
		case pinnedName:
			ok = pr.Repaired && strings.Contains(pr.Detail, "fetched again from its upstream")
		case downName:
			ok = !pr.Repaired && strings.Contains(pr.RepairError, "fetching it again failed")
		case plainName:
			ok = pr.Repaired && strings.HasSuffix(pr.Detail, "(dropped)")
		case upName:
			ok = !pr.Repaired && strings.Contains(pr.Detail, "nix-cache-proxy delete") && strings.Contains(pr.RepairError, "uploaded")
		case goneName:
			ok = !pr.Repaired && pr.Kind == verify.KindMissing && strings.Contains(pr.Detail, "(row dropped)") && strings.Contains(pr.RepairError, "uploaded")
		}
		if !ok {
			t.Errorf("problem %+v", pr)
		}
	}
	// The pinned NAR is on disk again, whole; the plain one is not (it is
	// fetched when asked for); the upload is left as it was.
	if got, err := os.ReadFile(e.narPath(pinnedName)); err != nil || !bytes.Equal(got, pinned.File) {
		t.Errorf("pinned NAR after repair: %v, %d bytes, not the upstream's", err, len(got))
	}
	if _, err := os.Stat(e.narPath(plainName)); !os.IsNotExist(err) {
		t.Errorf("unprotected bad NAR still on disk: %v", err)
	}
	if _, err := os.Stat(e.narPath(upName)); err != nil {
		t.Errorf("bad upload removed: %v", err)
	}
}
