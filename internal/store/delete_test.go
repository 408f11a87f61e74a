package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestClaimUploadSeen: an upload's source row records when it was
// uploaded, which --keep-latest orders uploads by (it was zero: every
// upload "first seen" in year 1, the oldest kept).
func TestClaimUploadSeen(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	before := time.Now()
	commitNAR(t, s, pruneNAR(1), 10)
	text := fmt.Appendf(nil, "StorePath: /nix/store/%s-p\nURL: nar/%s\nCompression: none\n", pruneHash(1), pruneNAR(1))
	must(t, s.ClaimUpload(ctx, pruneHash(1), text, pruneNAR(1), NARSource{Hash: pruneHash(1), Upstream: UploadedUpstream}))
	src, err := s.NARSource(ctx, pruneNAR(1))
	must(t, err)
	if src.Seen.Before(before) || src.Seen.After(time.Now()) {
		t.Errorf("upload's Seen %v, want the upload time (after %v)", src.Seen, before)
	}
}

// TestDeletePath: a path goes whole (narinfo, serving day, listing, its
// source rows, its NAR file and row, the one it was recompressed from),
// with the totals and the age order in step (openStore checks them); a
// NAR another narinfo names stays, a pinned path is refused, a path not
// stored is ErrNotFound.
func TestDeletePath(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	text := func(id, nar int) []byte {
		return fmt.Appendf(nil, "StorePath: /nix/store/%s-p%d\nURL: nar/%s\nCompression: none\n", pruneHash(id), id, pruneNAR(nar))
	}
	// 1: uploaded.
	commitNAR(t, s, pruneNAR(1), 100)
	must(t, s.ClaimUpload(ctx, pruneHash(1), text(1, 1), pruneNAR(1), NARSource{Hash: pruneHash(1), Upstream: UploadedUpstream}))
	must(t, s.PutAux(ctx, pruneHash(1)+".ls", []byte("{}")))
	// 2: recompressed from 3 (both files on disk).
	commitNAR(t, s, pruneNAR(3), 300)
	commitNAR(t, s, pruneNAR(2), 200)
	must(t, s.PutNarInfo(ctx, pruneHash(2), text(2, 3), pruneNAR(3), NARSource{Hash: pruneHash(2), Upstream: "http://up", URL: "http://up/x"}))
	must(t, s.PutNarInfo(ctx, pruneHash(2), text(2, 2), pruneNAR(2), NARSource{Hash: pruneHash(2), Upstream: "http://up", From: pruneNAR(3)}))
	// 4 and 5 share one NAR, named by 5's source row.
	commitNAR(t, s, pruneNAR(5), 50)
	must(t, s.PutNarInfo(ctx, pruneHash(5), text(5, 5), pruneNAR(5), NARSource{Hash: pruneHash(5), Upstream: "http://up"}))
	must(t, s.PutNarInfo(ctx, pruneHash(4), text(4, 5), pruneNAR(5), NARSource{Hash: pruneHash(5), Upstream: "http://up"}))
	// 6: pinned.
	putPath(t, s, 6)
	must(t, s.PutPin(ctx, Pin{Hash: pruneHash(6), StorePath: pruneHash(6)}))
	if _, err := s.NarInfo(ctx, pruneHash(1)); err != nil { // in the hot set
		t.Fatal(err)
	}

	for _, tc := range []struct {
		id    int
		nars  []string
		bytes int64
		up    bool
		err   error
	}{
		{id: 1, nars: []string{pruneNAR(1)}, bytes: 100, up: true},
		{id: 2, nars: []string{pruneNAR(2), pruneNAR(3)}, bytes: 500},
		{id: 4, nars: nil}, // 5's NAR stays
		{id: 6, err: ErrPinned},
		{id: 7, err: ErrNotFound},
		{id: 1, err: ErrNotFound}, // twice
	} {
		d, err := s.DeletePath(ctx, pruneHash(tc.id))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("delete %d: %v, want %v", tc.id, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("delete %d: %v", tc.id, err)
		}
		if !slices.Equal(d.NARs, tc.nars) || d.Bytes != tc.bytes || d.Uploaded != tc.up || d.StorePath != fmt.Sprintf("/nix/store/%s-p%d", pruneHash(tc.id), tc.id) {
			t.Errorf("delete %d: %+v, want NARs %v, %d bytes, uploaded %v", tc.id, d, tc.nars, tc.bytes, tc.up)
		}
		if _, err := s.NarInfo(ctx, pruneHash(tc.id)); !errors.Is(err, ErrNotFound) {
			t.Errorf("narinfo %d after delete: %v", tc.id, err)
		}
		for _, name := range tc.nars {
			assertAbsent(t, s, name)
			if _, err := s.NARSource(ctx, name); !errors.Is(err, ErrNotFound) {
				t.Errorf("source of %s after delete: %v", name, err)
			}
		}
	}
	if _, err := s.Aux(ctx, pruneHash(1)+".ls"); !errors.Is(err, ErrNotFound) {
		t.Errorf("listing of 1 after delete: %v", err)
	}
	if ok, err := s.HasNAR(ctx, pruneNAR(5)); !ok || err != nil {
		t.Errorf("the NAR 5 still names was deleted: %v %v", ok, err)
	}
	if _, err := s.NarInfo(ctx, pruneHash(6)); err != nil {
		t.Errorf("pinned narinfo: %v", err)
	}
	rowsCounted(t, s, 2) // 5, 6
	if st, _ := s.Stats(ctx); st.NARs != 1 || st.NARBytes != 50 {
		t.Errorf("stats after deletes: %+v, want 1 NAR of 50 bytes", st)
	}
}
