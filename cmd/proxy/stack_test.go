package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
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
