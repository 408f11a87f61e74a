package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

func TestProgressLine(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		st   prefetch.Status
		at   time.Duration // after start
		want string
	}{
		{"nothing yet", prefetch.Status{Paths: 3, BytesTotal: 2 << 30}, time.Second,
			"[0/3 paths] 0 B / 2.0 GiB"},
		{"halfway at 100 MiB/s", prefetch.Status{Paths: 3, Cached: 1, BytesDone: 1 << 30, BytesTotal: 2 << 30}, 1024 * time.Second / 100,
			"[1/3 paths] 1.0 GiB / 2.0 GiB  100.0 MiB/s  ETA 10s"},
		{"minutes left", prefetch.Status{Paths: 1, BytesDone: 100 << 20, BytesTotal: 2100 << 20}, 10 * time.Second,
			"[0/1 paths] 100.0 MiB / 2.1 GiB  10.0 MiB/s  ETA 3m20s"},
		{"done", prefetch.Status{Paths: 1, Cached: 1, BytesDone: 5 << 20, BytesTotal: 5 << 20}, time.Second,
			"[1/1 paths] 5.0 MiB / 5.0 MiB  5.0 MiB/s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.st.Started = start
			if got := progressLine(tt.st, start.Add(tt.at)); got != tt.want {
				t.Errorf("progressLine = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestVerifyLineAndProblems(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	st := verify.Status{Started: start, Files: 40, FilesDone: 12, BytesDone: 1 << 30, BytesTotal: 2 << 30, ProblemsTotal: 2}
	if got, want := verifyLine(st, start.Add(1024*time.Second/100)), "[12/40 files] 1.0 GiB / 2.0 GiB  100.0 MiB/s  ETA 10s  2 bad"; got != want {
		t.Errorf("verifyLine = %q, want %q", got, want)
	}
	tests := []struct {
		p    verify.Problem
		want string
	}{
		{verify.Problem{Name: "n.nar", Kind: "hash", Detail: "d"}, "bad      n.nar [hash]: d\n"},
		{verify.Problem{Name: "n.nar", Kind: "hash", Detail: "d (dropped)", Repaired: true}, "repaired n.nar [hash]: d (dropped)\n"},
		{verify.Problem{Name: "index.db", Kind: "index", Detail: "d", RepairError: "e"}, "bad      index.db [index]: d; not repaired: e\n"},
	}
	for _, tt := range tests {
		var b strings.Builder
		printProblem(&b, tt.p)
		if b.String() != tt.want {
			t.Errorf("printProblem = %q, want %q", b.String(), tt.want)
		}
	}
	done := verify.Status{ID: "j", State: verify.StateDone, FilesDone: 3, BytesDone: 3 << 20, ProblemsTotal: 2, Unrepaired: 2,
		Started: start, Finished: start.Add(time.Second)}
	if got, want := verifySummary(done), "verify j done: 3 NAR files (3.0 MiB) checked in 1s, 2 bad (--repair drops them, and fetches the pinned or kept ones again)"; got != want {
		t.Errorf("verifySummary = %q, want %q", got, want)
	}
}
