package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// refillIn is what the NAR row of name keeps, as the pass reads it.
func refillIn(t *testing.T, s *Store, name string) (kept refill, walked bool, ok bool) {
	t.Helper()
	s.db.View(func(tx *bolt.Tx) error {
		var r narRow
		if v := tx.Bucket(bucketNAR).Get([]byte(name)); v != nil {
			if err := decodeNARRow(v, &r); err != nil {
				t.Fatal(err)
			}
			kept, ok = r.Refill, true
		}
		return nil
	})
	s.WalkNARs(context.Background(), func(u *NARUse) error {
		if string(u.Name) == name {
			walked = u.Refillable
		}
		return nil
	})
	return kept, walked, ok
}

// TestRefillKept: whichever writes last, the NAR row or its source row,
// the NAR row says whether the NAR can be fetched again, as the source
// row does; an upload (no upstream) never says yes.
func TestRefillKept(t *testing.T) {
	ctx := context.Background()
	const hash = "00000000000000000000000000000001"
	text := []byte("StorePath: /nix/store/" + hash + "-x\nURL: nar/" + narName + "\n")
	fromUp := NARSource{Hash: hash, Upstream: "http://up", URL: "http://up/nar/" + narName}
	uploaded := NARSource{Hash: hash, Upstream: UploadedUpstream}
	steps := map[string]func(t *testing.T, s *Store){
		"nar":    func(t *testing.T, s *Store) { commitNAR(t, s, narName, 100) },
		"source": func(t *testing.T, s *Store) { must(t, s.PutNarInfo(ctx, hash, text, narName, fromUp)) },
		"claim":  func(t *testing.T, s *Store) { must(t, s.ClaimUpload(ctx, hash, text, narName, uploaded)) },
		"flush": func(t *testing.T, s *Store) {
			f, err := s.OpenNAR(ctx, narName)
			must(t, err)
			f.Close()
			must(t, s.FlushAccess(ctx))
		},
		"reopen": func(t *testing.T, s *Store) {
			must(t, s.Close())
			*s = *openStore(t, s.dir)
		},
	}
	for _, tc := range []struct {
		steps []string
		want  refill
	}{
		{[]string{"nar"}, refillNo}, // an upload not yet claimed
		{[]string{"source", "nar"}, refillYes},
		{[]string{"nar", "source"}, refillYes},
		{[]string{"nar", "claim"}, refillNo},
		{[]string{"nar", "claim", "source"}, refillYes}, // an upstream has it after all
		{[]string{"nar", "source", "claim"}, refillNo},
		{[]string{"source", "nar", "flush"}, refillYes},
		{[]string{"nar", "claim", "flush", "reopen"}, refillNo},
		{[]string{"source", "nar", "reopen"}, refillYes},
	} {
		t.Run(fmt.Sprint(tc.steps), func(t *testing.T) {
			s := openStore(t, t.TempDir())
			for _, step := range tc.steps {
				steps[step](t, s)
			}
			kept, walked, ok := refillIn(t, s, narName)
			if !ok || kept != tc.want || walked != (tc.want == refillYes) {
				t.Errorf("row keeps %d (found %v), walk says refillable %v; want %d", kept, ok, walked, tc.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRefillUpgraded: NAR rows written before the copy was kept get it at
// Open, from their source rows, batch after batch; the walk reads a row
// still without it from its source.
func TestRefillUpgraded(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	stored := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	want := map[string]bool{}
	s.db.Update(func(tx *bolt.Tx) error {
		for i := range 7 {
			name := fmt.Sprintf("%052d.nar", i)
			// The layout of a row before the copy was kept.
			row := fmt.Sprintf(`{"size":10,"stored":%q}`, stored.Format(time.RFC3339Nano))
			must(t, tx.Bucket(bucketNAR).Put([]byte(name), []byte(row)))
			up := "http://up"
			switch i % 3 {
			case 0: // no source row: an upload not yet claimed
				want[name] = false
				continue
			case 1:
				up = UploadedUpstream
			}
			want[name] = up != UploadedUpstream
			src, _ := json.Marshal(NARSource{Upstream: up, URL: up + "/" + name})
			must(t, tx.Bucket(bucketNARSource).Put([]byte(name), src))
		}
		return nil
	})
	walk := func() map[string]bool {
		got := map[string]bool{}
		must(t, s.WalkNARs(context.Background(), func(u *NARUse) error {
			got[string(u.Name)] = u.Refillable
			return nil
		}))
		return got
	}
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("walk before the upgrade: %v, want %v", got, want)
	}
	unknown, err := s.countNARs()
	if err != nil || unknown != 7 {
		t.Fatalf("countNARs = %d, %v; want 7 rows to upgrade", unknown, err)
	}
	must(t, s.upgradeRefill(unknown, 3))
	if unknown, _ := s.countNARs(); unknown != 0 {
		t.Errorf("%d rows not upgraded", unknown)
	}
	for name, refillable := range want {
		kept, _, _ := refillIn(t, s, name)
		if wantKept := map[bool]refill{true: refillYes, false: refillNo}[refillable]; kept != wantKept {
			t.Errorf("%s keeps %d, want %d", name, kept, wantKept)
		}
	}
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("walk after the upgrade: %v, want %v", got, want)
	}
	// Open upgrades too, and then has nothing left to do.
	s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNAR).Put([]byte(fmt.Sprintf("%052d.nar", 1)), []byte(`{"size":10,"stored":"2025-01-01T00:00:00Z"}`))
	})
	must(t, s.Close())
	s = openStore(t, dir)
	if unknown, _ := s.countNARs(); unknown != 0 {
		t.Errorf("Open left %d rows without their copy", unknown)
	}
}
