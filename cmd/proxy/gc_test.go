package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
)

// TestGCOffline: with no server, gc works on the cache dir itself.
func TestGCOffline(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"gc", "--dry-run", "--cache-dir", t.TempDir(),
		"--max-size", "10GiB"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{"REASON", "size", "free-space", "retention", "total", "--max-size 10.0 GiB",
		"index: would prune 0 narinfos"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestPrintGC(t *testing.T) {
	var b bytes.Buffer
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	printGC(&b, evict.Report{
		DryRun: true,
		Reasons: []evict.Reason{{Reason: "size", Files: 1, Bytes: 2 << 30}, {Reason: "free-space"},
			{Reason: "retention", Files: 1, Bytes: 1 << 20}},
		Evicted: []evict.Evicted{
			{NAR: "a.nar.xz", StorePath: "/nix/store/x-old.qcow2", Bytes: 1 << 20, Access: at, Reason: "retention"},
			{NAR: "b.nar.xz", Bytes: 2 << 30, Access: at, Reason: "size"},
		},
		Kept:  []evict.Variant{{Rule: "*.qcow2=1", StorePath: "/nix/store/y-new.qcow2"}},
		Prune: &evict.PruneReport{DryRun: true, Stale: 40, Needed: 10, Pruned: 30, Bytes: 30 << 10, Backlog: 5},
	})
	for _, want := range []string{
		"would evict  /nix/store/x-old.qcow2  1.0 MiB  (retention, last served 2026-05-01 12:00)",
		"would evict  nar/b.nar.xz  2.0 GiB  (size",
		"kept  /nix/store/y-new.qcow2  (--keep-latest *.qcow2=1)",
		"total       2      2.0 GiB",
		"index: would prune 30 narinfos with their origin records, 30.0 KiB of rows (40 stale in this round, 10 needed by narinfos that stay; 5 more stale for the next rounds)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
