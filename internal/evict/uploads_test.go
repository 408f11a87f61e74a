package evict

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

func (d *diskStore) hasNarInfo(id int) bool {
	_, err := d.ReadNarInfo(context.Background(), hashOf(id))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		panic(err)
	}
	return err == nil
}

func removed(r Report) []string {
	var out []string
	for _, e := range r.Evicted {
		if e.Removed {
			out = append(out, e.NAR)
		}
	}
	slices.Sort(out)
	return out
}

// TestUploadedVariantsAgeOut: --keep-latest keeps the newest uploads by
// upload time; those it leaves behind go whole (narinfo and NAR) at gc, or
// at a pass that needs room, never at a pass that does not; one a cached
// path references stays; what the kept one references stays.
func TestUploadedVariantsAgeOut(t *testing.T) {
	rule, err := ParseRule("img-*=1")
	if err != nil {
		t.Fatal(err)
	}
	setup := func(t *testing.T) *diskStore {
		d := newDiskStore(t)
		d.add(t, tpath{id: 6, name: "lib", size: kb, upload: true})
		d.add(t, tpath{id: 1, name: "img-a", size: kb, upload: true, seen: 0})
		d.add(t, tpath{id: 2, name: "img-b", size: kb, upload: true, seen: time.Hour})
		d.add(t, tpath{id: 3, name: "img-c", size: kb, upload: true, seen: 2 * time.Hour, refs: []int{6}})
		d.add(t, tpath{id: 4, name: "img-d", size: kb, upload: true, seen: -time.Hour})
		d.add(t, tpath{id: 9, name: "app", size: kb, upload: true, refs: []int{4}}) // needs img-d
		d.add(t, tpath{id: 5, size: kb})
		return d
	}
	check := func(t *testing.T, d *diskStore, rep Report, gone []int) {
		t.Helper()
		var want []string
		for _, id := range gone {
			want = append(want, narOf(id))
		}
		slices.Sort(want)
		if got := removed(rep); !slices.Equal(got, want) {
			t.Errorf("deleted %v, want %v", got, want)
		}
		for _, id := range []int{1, 2, 3, 4, 6, 9} {
			if gone := slices.Contains(gone, id); d.hasNarInfo(id) == gone || d.has(id) == gone {
				t.Errorf("path %d: narinfo %v, NAR %v; want both %v", id, d.hasNarInfo(id), d.has(id), !gone)
			}
		}
	}

	t.Run("gc", func(t *testing.T) {
		d := setup(t)
		e := New(d, Config{KeepLatest: []Rule{rule}})
		kept, err := e.Kept(context.Background())
		if err != nil || len(kept) != 1 || kept[0].Hash != hashOf(3) {
			t.Fatalf("kept %+v (%v), want img-c, the last uploaded", kept, err)
		}
		rep, err := e.Collect(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		check(t, d, rep, []int{1, 2})
		if rep.Reasons[2].Files != 2 || rep.Reasons[2].Bytes != 2*kb || rep.Held != nil {
			t.Errorf("reasons %+v, held %+v", rep.Reasons, rep.Held)
		}
	})
	t.Run("pass without pressure", func(t *testing.T) {
		d := setup(t)
		rep, err := New(d, Config{KeepLatest: []Rule{rule}}).Pass(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		check(t, d, rep, nil)
	})
	t.Run("pass under pressure", func(t *testing.T) {
		d := setup(t)
		rep, err := New(d, Config{KeepLatest: []Rule{rule}, MaxSize: boundFor(d, kb)}).Pass(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		check(t, d, rep, []int{1, 2})
		if d.has(5) != true {
			t.Error("the pulled NAR was evicted although the uploads left behind made room")
		}
	})
}

// TestEvictUploads: without EvictUploads a pass evicts no upload and says
// what holds the space; with it the least recently served uploads go whole,
// but not one a path that stays references.
func TestEvictUploads(t *testing.T) {
	setup := func(t *testing.T) *diskStore {
		d := newDiskStore(t)
		d.add(t, tpath{id: 1, size: kb, upload: true})
		d.add(t, tpath{id: 2, size: kb, upload: true, refs: []int{1}})
		d.add(t, tpath{id: 3, size: kb, upload: true})
		d.add(t, tpath{id: 7, size: kb, upload: true})
		d.add(t, tpath{id: 4, size: kb, refs: []int{7}}) // pulled, yet it names upload 7
		d.add(t, tpath{id: 5, size: kb})                 // pinned
		if err := d.PutPin(context.Background(), store.Pin{Hash: hashOf(5), StorePath: hashOf(5), Since: t0}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("off", func(t *testing.T) {
		d := setup(t)
		rep, err := New(d, Config{MaxSize: boundFor(d, 5*kb)}).Pass(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := evictedNames(rep); !slices.Equal(got, names(4)) {
			t.Errorf("evicted %v, want %v", got, names(4))
		}
		h := rep.Held
		if h == nil || h.Uploads != (Files{4, 4 * kb}) || h.Pinned != (Files{1, kb}) || h.Short <= 0 || h.Index <= 0 {
			t.Errorf("held %+v, want 4 uploads and 1 pinned NAR", h)
		}
	})
	t.Run("on", func(t *testing.T) {
		d := setup(t)
		rep, err := New(d, Config{MaxSize: boundFor(d, 5*kb), EvictUploads: true}).Pass(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := removed(rep), names(1, 2, 3); !slices.Equal(got, want) {
			t.Errorf("deleted %v, want %v", got, want)
		}
		for _, id := range []int{1, 2, 3} {
			if d.hasNarInfo(id) || d.has(id) {
				t.Errorf("upload %d: narinfo or NAR left", id)
			}
		}
		if !d.hasNarInfo(7) || !d.has(7) {
			t.Error("upload 7, which a cached path references, was deleted")
		}
		if h := rep.Held; h == nil || h.Uploads != (Files{1, kb}) {
			t.Errorf("held %+v, want upload 7", h)
		}
	})
}

// TestProtected: what verify --repair must fetch again at once: the NARs in
// the closures of the pinned paths and of the kept variants, nothing else.
func TestProtected(t *testing.T) {
	d := newDiskStore(t)
	d.add(t, tpath{id: 1, size: kb})
	d.add(t, tpath{id: 2, size: kb, refs: []int{1}}) // pinned
	d.add(t, tpath{id: 3, size: kb})
	d.add(t, tpath{id: 10, name: "img-a", size: kb, seen: 0})
	d.add(t, tpath{id: 20, name: "img-b", size: kb, seen: time.Hour, refs: []int{3}})
	d.add(t, tpath{id: 5, size: kb})
	if err := d.PutPin(context.Background(), store.Pin{Hash: hashOf(2), StorePath: hashOf(2), Since: t0}); err != nil {
		t.Fatal(err)
	}
	rule, _ := ParseRule("img-*=1")
	got, err := New(d, Config{KeepLatest: []Rule{rule}}).Protected(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var prot []string
	for n := range got {
		prot = append(prot, n)
	}
	slices.Sort(prot)
	if want := names(1, 2, 3, 20); !slices.Equal(prot, want) {
		t.Errorf("protected %v, want %v", prot, want)
	}
}
