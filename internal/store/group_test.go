package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openGroupDB(t *testing.T) *groupCommit {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return &groupCommit{db: db}
}

// waitGroupState waits until busy and n callers queued.
func waitGroupState(t *testing.T, g *groupCommit, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		busy, got := g.busy, len(g.queue)
		g.mu.Unlock()
		if busy && got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy %v, %d callers queued; want busy and %d", busy, got, n)
		}
	}
}

// during runs n callers of fn(i) while another caller's commit is in
// progress, lets that commit finish, and returns each caller's error.
func during(t *testing.T, g *groupCommit, n int, fn func(i int, tx *bolt.Tx) error) []error {
	t.Helper()
	release, first := make(chan struct{}), make(chan error)
	go func() {
		first <- g.update(func(tx *bolt.Tx) error {
			<-release
			return tx.Bucket([]byte("b")).Put([]byte("first"), nil)
		})
	}()
	waitGroupState(t, g, 0)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = g.update(func(tx *bolt.Tx) error { return fn(i, tx) }) })
	}
	waitGroupState(t, g, n)
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	return errs
}

// TestGroupCommitShares: callers arriving while a commit runs share the
// next transaction.
func TestGroupCommitShares(t *testing.T) {
	g := openGroupDB(t)
	var mu sync.Mutex
	txs := map[*bolt.Tx]bool{}
	errs := during(t, g, 20, func(i int, tx *bolt.Tx) error {
		mu.Lock()
		txs[tx] = true
		mu.Unlock()
		return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i), nil)
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(txs) != 1 {
		t.Errorf("%d transactions for 20 callers that came during a commit, want 1", len(txs))
	}
	if g.busy || len(g.queue) != 0 {
		t.Errorf("busy %v, %d queued after every call returned", g.busy, len(g.queue))
	}
}

// TestGroupCommitErrorIsolated: one caller's error fails that caller
// alone; the others' writes are committed.
func TestGroupCommitErrorIsolated(t *testing.T) {
	g := openGroupDB(t)
	bad := errors.New("refused")
	errs := during(t, g, 10, func(i int, tx *bolt.Tx) error {
		if i == 7 {
			return bad
		}
		return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i), nil)
	})
	for i, err := range errs {
		if i == 7 && !errors.Is(err, bad) || i != 7 && err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	g.db.View(func(tx *bolt.Tx) error {
		for i := range 10 {
			if got := tx.Bucket([]byte("b")).Get(fmt.Appendf(nil, "k%d", i)) != nil; got != (i != 7) {
				t.Errorf("k%d stored: %v", i, got)
			}
		}
		return nil
	})
}
