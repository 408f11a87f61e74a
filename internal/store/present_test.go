package store_test

import (
	"bytes"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// TestPresent: a narinfo kept before Options.Present was set is served
// through it after a reopen, from the index and then from the hot set.
func TestPresent(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hash := "0kdzrs8ny0y8dnbv9vxg0q6rl9xk8flb"
	if err := st.PutNarInfo(t.Context(), hash, []byte("StorePath: x\n"), "n.nar", store.NARSource{}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	calls := 0
	st, err = store.OpenWith(dir, store.Options{Present: func(text []byte) []byte {
		calls++
		return append(bytes.Clone(text), "Sig: mine\n"...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range 3 {
		text, err := st.NarInfo(t.Context(), hash)
		if err != nil || string(text) != "StorePath: x\nSig: mine\n" {
			t.Fatalf("NarInfo = %q, %v", text, err)
		}
	}
	if calls != 1 {
		t.Errorf("Present ran %d times for 3 reads, want once (then the hot set)", calls)
	}
}
