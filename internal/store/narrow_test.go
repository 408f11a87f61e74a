package store

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeNARRow(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891011, time.UTC)
	for _, r := range []narRow{
		{Size: 123, Stored: at},
		{Size: 0, Stored: at, Access: at.Add(time.Hour)},
		{Size: 1 << 40, Stored: at.In(time.FixedZone("x", 3600)), Access: at},
	} {
		v, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var fast narRow
		if !fastNARRow(v, &fast) {
			t.Errorf("fast path refused %s", v)
		}
		var want narRow
		json.Unmarshal(v, &want)
		if diff := cmp.Diff(want, fast); diff != "" {
			t.Errorf("%s (-json +fast):\n%s", v, diff)
		}
	}
	// Other layouts still decode, through encoding/json.
	for _, v := range []string{
		`{"stored":"2026-03-04T05:06:07Z","size":5}`,
		`{ "size": 5, "stored": "2026-03-04T05:06:07Z" }`,
		`{"size":5,"stored":"2026-03-04T05:06:07Z","extra":1}`,
	} {
		var r narRow
		if err := decodeNARRow([]byte(v), &r); err != nil || r.Size != 5 {
			t.Errorf("decodeNARRow(%s) = %+v, %v", v, r, err)
		}
	}
	var r narRow
	if err := decodeNARRow([]byte(`{"size":"x"}`), &r); err == nil {
		t.Error("a bad row decoded")
	}
}
