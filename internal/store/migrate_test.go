package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// schema1Index turns the store in dir into an index as schema 1 left it:
// no age order, no totals, and the NAR rows given (name -> row), with
// source rows from an upstream, from an upload, or none (an upload not yet
// claimed) in turn, in name order. It returns whether each NAR is
// refillable.
func schema1Index(t *testing.T, dir string, rows map[string]string) map[string]bool {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	must(t, err)
	defer db.Close()
	refillable := map[string]bool{}
	must(t, db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		must(t, meta.Put(keySchema, []byte("1")))
		must(t, meta.Delete(keyNARTotals))
		must(t, tx.DeleteBucket(bucketNARAge))
		for i, name := range slices.Sorted(maps.Keys(rows)) {
			must(t, tx.Bucket(bucketNAR).Put([]byte(name), []byte(rows[name])))
			up := "http://up"
			switch i % 3 {
			case 0: // no source row
				refillable[name] = false
				continue
			case 1:
				up = UploadedUpstream
			}
			refillable[name] = up != UploadedUpstream
			src, _ := json.Marshal(NARSource{Upstream: up, URL: up + "/" + name})
			must(t, tx.Bucket(bucketNARSource).Put([]byte(name), src))
		}
		return nil
	}))
	return refillable
}

// TestMigrate: an index of schema 1 is upgraded at Open, and an upgrade a
// crash cut short is finished by the next: every NAR row gets its refill
// copy and its place in the age order, the totals are counted, and the
// index says schema 2 from the upgrade's first transaction on (a binary
// that reads only 1 refuses it).
func TestMigrate(t *testing.T) {
	stored := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := map[string]string{}
	var size int64
	for i := range 7 {
		name := fmt.Sprintf("%052d.nar", i)
		// Schema 1's layouts: without the refill copy, with and
		// without an access, and with the copy (written by a binary
		// that kept it: the NARs schema1Index gives an upstream).
		row := fmt.Sprintf(`{"size":%d,"stored":%q}`, 10+i, stored.Format(time.RFC3339Nano))
		switch i % 3 {
		case 1:
			row = fmt.Sprintf(`{"size":%d,"stored":%q,"access":%q}`, 10+i, stored.Format(time.RFC3339Nano), stored.Add(time.Duration(7-i)*time.Hour).Format(time.RFC3339Nano))
		case 2:
			row = fmt.Sprintf(`{"size":%d,"stored":%q,"refill":1}`, 10+i, stored.Format(time.RFC3339Nano))
		}
		rows[name] = row
		size += int64(10 + i)
	}
	for _, tc := range []struct {
		name    string
		batches int // upgrade batches committed before the crash; -1: none begun
	}{
		{"at open", -1},
		{"crashed after marking", 0},
		{"crashed after one batch", 1},
		{"crashed before the last", 2},
		{"crashed before the order was built", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			must(t, err)
			if u := s.Upgraded(); u != (Upgrade{}) {
				t.Errorf("a new index was upgraded: %+v", u)
			}
			must(t, s.Close())
			refillable := schema1Index(t, dir, rows)
			if tc.batches >= 0 {
				db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
				must(t, err)
				must(t, db.Update(func(tx *bolt.Tx) error {
					if _, err := tx.CreateBucketIfNotExists(bucketNARAge); err != nil {
						return err
					}
					return startMigration(tx)
				}))
				for range tc.batches {
					must(t, db.Update(func(tx *bolt.Tx) error {
						done, err := migrateBatch(tx, 3)
						if done {
							t.Fatal("the upgrade ended early")
						}
						return err
					}))
				}
				must(t, db.View(func(tx *bolt.Tx) error {
					if v := tx.Bucket(bucketMeta).Get(keySchema); string(v) != schemaVersion {
						t.Errorf("schema %q after the upgrade began, want %q", v, schemaVersion)
					}
					return nil
				}))
				must(t, db.Close())
			}
			s = openStore(t, dir) // checkDerived at its end
			if u := s.Upgraded(); u.From != "1" || u.To != "2" {
				t.Errorf("Upgraded() = %+v, want from 1 to 2", u)
			}
			if s.NARCount() != int64(len(rows)) || s.NARBytes() != size {
				t.Errorf("totals %d files of %d bytes, want %d of %d", s.NARCount(), s.NARBytes(), len(rows), size)
			}
			for name, want := range refillable {
				kept, walked, ok := refillIn(t, s, name)
				if wantKept := map[bool]refill{true: refillYes, false: refillNo}[want]; !ok || kept != wantKept || walked != want {
					t.Errorf("%s keeps %d, walk says %v; want %d", name, kept, walked, wantKept)
				}
			}
			must(t, s.db.View(func(tx *bolt.Tx) error {
				if tx.Bucket(bucketMeta).Get(keyMigrating) != nil {
					t.Error("the upgrade's mark is still there")
				}
				return nil
			}))
		})
	}
}

// TestSchemaRefused: an index of a schema this binary neither reads nor
// upgrades is refused, untouched.
func TestSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	must(t, err)
	must(t, s.Close())
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("3")) }))
	must(t, db.Close())
	if _, err := Open(dir); !errors.Is(err, ErrSchema) {
		t.Fatalf("Open of schema 3: %v, want ErrSchema", err)
	}
}
