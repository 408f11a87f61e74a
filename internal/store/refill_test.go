package store

import (
	"context"
	"fmt"
	"testing"

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
	must(t, s.NARsByAge(context.Background(), func(u *NARUse) (bool, error) {
		if string(u.Name) == name {
			walked = u.Refillable
		}
		return true, nil
	}))
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
