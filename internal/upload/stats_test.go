package upload

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestStatsTally: uploads counted by outcome, bytes only of those kept.
func TestStatsTally(t *testing.T) {
	var tl tally
	if got := tl.get(); got.Outcomes != nil || got.Bytes != 0 {
		t.Errorf("empty tally = %+v", got)
	}
	tl.add("ok", 100)
	tl.add("ok", 20)
	tl.add("exists", 7)
	tl.add("rejected", 5)
	want := Stats{Outcomes: map[string]int64{"ok": 2, "exists": 1, "rejected": 1}, Bytes: 120}
	got := tl.get()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	got.Outcomes["ok"] = 99 // a copy: the tally's own counts stay
	if tl.get().Outcomes["ok"] != 2 {
		t.Error("Stats returned the tally's own map")
	}
}
