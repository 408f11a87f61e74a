package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSkippedAndDown: a lookup that failed only because upstreams were
// skipped (their breakers open) is Skipped, which callers log quietly; one
// with an upstream failing anew is not. Down says why when no upstream is
// asked at all, and nothing while one is.
func TestSkippedAndDown(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // connections refused from now on
	notFound := newUpstream(t, static(http.StatusNotFound, "")).URL
	failing := newUpstream(t, static(http.StatusInternalServerError, "")).URL
	tests := []struct {
		name        string
		others      []string // asked after the dead one
		wantSkipped bool
		wantDown    bool
	}{
		{name: "the only upstream is down", wantSkipped: true, wantDown: true},
		{name: "another says not found", others: []string{notFound}, wantSkipped: true},
		{name: "another fails too", others: []string{failing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The dead one opens its breaker at its first failure and
			// stays open for the test; the others never open.
			clients := []*Client{newClient(t, closed.URL, Options{FailureThreshold: 1, BackoffMin: time.Hour})}
			for _, u := range tt.others {
				clients = append(clients, newClient(t, u, Options{FailureThreshold: 1000, Attempts: 1}))
			}
			g := NewGroupWith(clients, GroupOptions{})
			t.Cleanup(g.Close)
			if err := g.Down(); err != nil {
				t.Fatalf("Down before any lookup: %v", err)
			}
			_, err := g.NarInfo(context.Background(), "0123456789abcdfghijklmnpqrsvwxyz", nil)
			if Skipped(err) {
				t.Errorf("the failure that opens the breaker is Skipped: %v", err)
			}
			_, err = g.NarInfo(context.Background(), "0123456789abcdfghijklmnpqrsvwxyz", nil)
			if Skipped(err) != tt.wantSkipped {
				t.Errorf("Skipped(%v) = %v, want %v", err, !tt.wantSkipped, tt.wantSkipped)
			}
			down := g.Down()
			if (down != nil) != tt.wantDown {
				t.Fatalf("Down() = %v, want down %v", down, tt.wantDown)
			}
			if down != nil && (!strings.HasPrefix(down.Error(), "no upstream answers: "+clients[0].String()+" open") ||
				!strings.Contains(down.Error(), "connection refused")) {
				t.Errorf("Down() = %q, want the upstream, its breaker and its last error", down)
			}
		})
	}
}
