package nixtest

import (
	"net/http"
	"testing"
)

// TestFixture proves the fixture against real nix with no proxy in between:
// a client copies the closure straight from the static server.
func TestFixture(t *testing.T) {
	Require(t)
	c, cache := BuildClosure(t, 1<<20)
	if len(c.Paths) != 6 {
		t.Fatalf("closure has %d paths, want 6: %q", len(c.Paths), c.Paths)
	}
	url, stop := ServeDir(t, cache.Dir)

	resp, err := http.Get(url + "/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /nix-cache-info: %s", resp.Status)
	}
	for _, p := range []string{"/0000000000000000000000000000000a.narinfo", "/nar/"} {
		resp, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", p, resp.Status)
		}
	}

	store, out, err := CopyFrom(t, url, cache.PublicKey, c.Paths...)
	if err != nil {
		t.Fatalf("nix copy: %v\n%s", err, out)
	}
	VerifyCopy(t, store, c)

	t.Run("untrusted key", func(t *testing.T) {
		_, other := NewKey(t, "test-cache-2")
		_, out, err := CopyFrom(t, url, other, c.Root)
		if err == nil {
			t.Fatalf("nix copy trusting only another key succeeded:\n%s", out)
		}
		t.Logf("nix copy failed as expected: %v\n%s", err, out)
	})

	t.Run("added later", func(t *testing.T) {
		c2, _ := BuildClosure(t, 1024)
		AddToCache(t, cache, c2)
		store, out, err := CopyFrom(t, url, cache.PublicKey, c2.Root)
		if err != nil {
			t.Fatalf("nix copy: %v\n%s", err, out)
		}
		VerifyCopy(t, store, c2)
	})

	// A stopped upstream refuses connections; nix would retry that for
	// about 4 s before giving up, so a plain GET checks it.
	stop()
	if resp, err := http.Get(url + "/nix-cache-info"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET after stop: %s, want a connection error", resp.Status)
	}
}
