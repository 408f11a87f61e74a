package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// TestCloseReporting: a cache dir that does not close cleanly is logged
// and fails the exit status; stack.close's error used to be dropped.
func TestCloseReporting(t *testing.T) {
	cfg, _, err := parseServeConfig([]string{"--cache-dir", t.TempDir()}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStack(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// A miss not written yet, and the index closed under it: the miss
	// log's last flush fails.
	s.misses.Record(store.MissEvent{Hash: fakeupstream.RandomHash(), Asked: true, Outcome: store.OutcomeNotFound})
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	err = nil
	s.closeReporting(slog.New(slog.NewTextHandler(&logged, nil)), &err)
	if err == nil || !strings.Contains(err.Error(), "close the cache dir") {
		t.Errorf("error %v, want one about closing the cache dir", err)
	}
	if !strings.Contains(logged.String(), "close the cache dir") {
		t.Errorf("log %q, want the failure", logged.String())
	}
}

// TestPresentSignsOnlyChecked: narinfos kept before the proxy had a key
// are signed when served only if they carry a trusted signature; one kept
// with --verify-signatures=false that no trusted key signed is served
// without the proxy's signature.
func TestPresentSignsOnlyChecked(t *testing.T) {
	up := fakeupstream.New(t)
	otherSK, _ := fakeupstream.NewKey(t, "other-1")
	trusted := up.Add(fakeupstream.Path{File: []byte("trusted"), Compression: "none"})
	untrusted := up.Add(fakeupstream.Path{File: []byte("untrusted"), Compression: "none", SignWith: &otherSK})
	dir := t.TempDir()
	open := func(args ...string) *stack {
		t.Helper()
		cfg, _, err := parseServeConfig(append([]string{"--cache-dir", dir, "--upstream", up.URL()}, args...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		s, err := openStack(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// First without a key or checks: both kept, neither signed.
	s := open("--verify-signatures=false")
	for _, it := range []*fakeupstream.Item{trusted, untrusted} {
		if _, err := s.cache.NarInfo(t.Context(), it.Hash); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	sk, pk, err := narinfo.GenerateKey("cache.lan-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(sk.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open("--secret-key-file", keyFile, "--trusted-public-key", up.PublicKey().String())
	defer s.close()
	for _, tt := range []struct {
		it   *fakeupstream.Item
		want bool
	}{{trusted, true}, {untrusted, false}} {
		text, err := s.store.NarInfo(t.Context(), tt.it.Hash)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if got := narinfo.SignedBy(ni, pk); got != tt.want {
			t.Errorf("%s: signed by the proxy %v, want %v\n%s", tt.it.StorePath, got, tt.want, text)
		}
	}
}

// TestPruneAfterZeroIsOff: --prune-after 0 turns pruning off (the
// evictor's Options say off with a negative value, their 0 is the
// default), and the default prunes.
func TestPruneAfterZeroIsOff(t *testing.T) {
	for _, tc := range []struct {
		args []string
		off  bool
	}{
		{nil, false},
		{[]string{"--prune-after", "0"}, true},
	} {
		cfg, _, err := parseServeConfig(append([]string{"--cache-dir", t.TempDir()}, tc.args...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		s, err := openStack(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := s.evict.Prune(t.Context())
		if err != nil || rep.Off != tc.off {
			t.Errorf("%v: Prune = %+v, %v; want Off %v", tc.args, rep, err, tc.off)
		}
		if err := s.close(); err != nil {
			t.Fatal(err)
		}
	}
}
