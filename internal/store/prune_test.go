package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testClock is a settable clock for serving stamps.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

const day = 24 * time.Hour

func pruneHash(id int) string { return fmt.Sprintf("%032d", id) }
func pruneNAR(id int) string  { return fmt.Sprintf("%052d.nar", id) }

// putPath stores narinfo id (URL nar/<pruneNAR(id)>) referencing refs,
// with an upstream to refill it from, and no NAR file.
func putPath(t *testing.T, s *Store, id int, refs ...int) {
	t.Helper()
	var names []string
	for _, r := range refs {
		names = append(names, pruneHash(r)+"-p")
	}
	text := fmt.Sprintf("StorePath: /nix/store/%s-p\nURL: nar/%s\nCompression: none\nReferences: %s\n",
		pruneHash(id), pruneNAR(id), strings.Join(names, " "))
	src := NARSource{Hash: pruneHash(id), Upstream: "http://up", URL: "http://up/nar/" + pruneNAR(id)}
	if err := s.PutNarInfo(context.Background(), pruneHash(id), []byte(text), pruneNAR(id), src); err != nil {
		t.Fatal(err)
	}
}

func staleSet(t *testing.T, s *Store, cutoff time.Time) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := s.WalkNarInfoUse(context.Background(), cutoff, func(u *NarInfoUse) error {
		if u.Stale {
			out[strings.Clone(u.Hash)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestServedStamps: a hit is stamped in memory (never a write per hit),
// written by FlushServed; storing a narinfo stamps it and its references.
func TestServedStamps(t *testing.T) {
	c := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := OpenWith(t.TempDir(), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	putPath(t, s, 1)
	putPath(t, s, 2)
	stamp := func(id int) uint32 {
		var d uint32
		s.db.View(func(tx *bolt.Tx) error { d = getDay(tx.Bucket(bucketServed).Get([]byte(pruneHash(id)))); return nil })
		return d
	}
	day0 := dayOf(c.t)
	if stamp(1) != day0 {
		t.Fatalf("stored on day %d, stamped %d", day0, stamp(1))
	}
	c.t = c.t.Add(5 * day)
	if err := s.FlushServed(ctx); err != nil { // as each eviction pass does
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.NarInfo(ctx, pruneHash(1)); err != nil {
			t.Fatal(err)
		}
	}
	if stamp(1) != day0 {
		t.Error("a hit wrote to the index")
	}
	if err := s.FlushServed(ctx); err != nil {
		t.Fatal(err)
	}
	if stamp(1) != day0+5 || stamp(2) != day0 {
		t.Errorf("after flush: stamps %d, %d; want %d, %d", stamp(1), stamp(2), day0+5, day0)
	}
	// Day 10: 3 is stored referencing 2, which counts as used today.
	c.t = c.t.Add(5 * day)
	putPath(t, s, 3, 2)
	if err := s.FlushServed(ctx); err != nil {
		t.Fatal(err)
	}
	if stamp(2) != day0+10 {
		t.Errorf("a reference of a narinfo stored on day %d is stamped %d", day0+10, stamp(2))
	}
	// A stamp survives a restart.
	s.Close()
	if s, err = OpenWith(s.Dir(), Options{Now: c.now}); err != nil {
		t.Fatal(err)
	}
	if stamp(1) != day0+5 {
		t.Errorf("after restart: stamp %d", stamp(1))
	}
}

// TestServedSinceUpgrade: an index from before stamps counts every
// narinfo as served the day it was upgraded.
func TestServedSinceUpgrade(t *testing.T) {
	dir := t.TempDir()
	c := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := OpenWith(dir, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	putPath(t, s, 1)
	s.Close()
	// What an index written before stamps looks like.
	db, err := bolt.Open(dir+"/index.db", 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		tx.DeleteBucket(bucketServed)
		return tx.Bucket(bucketMeta).Delete(keyServedSince)
	})
	db.Close()
	c.t = c.t.Add(100 * day) // upgraded 100 days later
	if s, err = OpenWith(dir, Options{Now: c.now}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ttl = 30 * day
	if st := staleSet(t, s, c.t.Add(29*day-ttl)); len(st) != 0 {
		t.Errorf("stale 29 days after the upgrade: %v", st)
	}
	if st := staleSet(t, s, c.t.Add(32*day-ttl)); !st[pruneHash(1)] {
		t.Errorf("not stale 32 days after the upgrade: %v", st)
	}
}

// TestPruneNarInfosStops: a narinfo served after it was chosen stops the
// batch there, and the ones after it (what it may reference) stay.
func TestPruneNarInfosStops(t *testing.T) {
	c := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := OpenWith(t.TempDir(), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	putPath(t, s, 1)
	putPath(t, s, 2, 3)
	putPath(t, s, 3)
	if err := s.PutAux(ctx, pruneHash(1)+".ls", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(40 * day)
	cutoff := c.t.Add(-30 * day)
	if st := staleSet(t, s, cutoff); len(st) != 3 {
		t.Fatalf("stale %v, want all 3", st)
	}
	// 2 is served between the choice and the prune.
	if err := s.FlushServed(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NarInfo(ctx, pruneHash(2)); err != nil {
		t.Fatal(err)
	}
	keep := func(string) bool { return false }
	n, all, err := s.PruneNarInfos(ctx, []string{pruneHash(1), pruneHash(2), pruneHash(3)}, cutoff, keep)
	if err != nil || n != 1 || all {
		t.Fatalf("PruneNarInfos = %d, %v, %v; want 1, false", n, all, err)
	}
	if _, err := s.ReadNarInfo(ctx, pruneHash(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("narinfo 1: %v, want pruned", err)
	}
	if _, err := s.NARSource(ctx, pruneNAR(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("source 1: %v, want pruned", err)
	}
	if _, err := s.Aux(ctx, pruneHash(1)+".ls"); !errors.Is(err, ErrNotFound) {
		t.Errorf("listing 1: %v, want pruned", err)
	}
	for _, id := range []int{2, 3} {
		if _, err := s.ReadNarInfo(ctx, pruneHash(id)); err != nil {
			t.Errorf("narinfo %d: %v, want kept", id, err)
		}
	}
}

// TestPruneKeepsSharedSource: a NAR named by a narinfo that stays keeps
// its origin record when another narinfo naming it is pruned; a NAR on
// disk, a pin and an upload are never stale.
func TestPruneKeepsSharedSource(t *testing.T) {
	c := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := OpenWith(t.TempDir(), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	putPath(t, s, 1)
	putPath(t, s, 2)
	commitNAR(t, s, pruneNAR(2), 10)
	putPath(t, s, 3)
	if err := s.PutPin(ctx, Pin{Hash: pruneHash(3), StorePath: pruneHash(3)}); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(40 * day)
	cutoff := c.t.Add(-30 * day)
	if st := staleSet(t, s, cutoff); len(st) != 1 || !st[pruneHash(1)] {
		t.Errorf("stale %v, want only 1", st)
	}
	n, all, err := s.PruneNarInfos(ctx, []string{pruneHash(1)}, cutoff, func(nar string) bool { return nar == pruneNAR(1) })
	if err != nil || n != 1 || !all {
		t.Fatalf("PruneNarInfos = %d, %v, %v", n, all, err)
	}
	if _, err := s.NARSource(ctx, pruneNAR(1)); err != nil {
		t.Errorf("a source another narinfo still names was pruned: %v", err)
	}
}

// TestFastFrom: fastFrom reads what json.Marshal wrote.
func TestFastFrom(t *testing.T) {
	for _, src := range []NARSource{
		{Upstream: "http://up", URL: "http://up/nar/x"},
		{Upstream: "http://up", URL: "http://up/nar/x", From: pruneNAR(7) + ".xz", SHA256: make([]byte, 32)},
		{Upstream: UploadedUpstream, Hash: pruneHash(1), StorePath: `/nix/store/x-"from":"y`},
	} {
		row, err := json.Marshal(src)
		if err != nil {
			t.Fatal(err)
		}
		from, ok := fastFrom(row)
		if !ok || from != src.From {
			t.Errorf("fastFrom(%s) = %q, %v; want %q", row, from, ok, src.From)
		}
		if refill, ok := fastRefillable(row); !ok || refill != src.Refillable() {
			t.Errorf("fastRefillable(%s) = %v, %v", row, refill, ok)
		}
	}
}
