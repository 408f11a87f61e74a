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
		{Size: 7, Stored: at, Refill: refillYes},
		{Size: 7, Stored: at, Access: at, Refill: refillNo},
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
		`{"size":5,"stored":"2026-03-04T05:06:07Z","refill":1,"extra":1}`,
		`{"size":5,"stored":"2026-03-04T05:06:07Z","refill":12}`,
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

// TestUTCTime checks the fast time reader against time.Parse: what it
// reads, it reads the same; what it refuses, time.Parse reads or refuses.
func TestUTCTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fast bool // read without time.Parse
	}{
		{"2026-03-04T05:06:07Z", true},
		{"2026-03-04T05:06:07.5Z", true},
		{"2026-03-04T05:06:07.000891011Z", true},
		{"2026-12-31T23:59:59.999999999Z", true},
		{"2024-02-29T00:00:00Z", true},
		{"2000-02-29T00:00:00Z", true},
		{"2026-02-29T00:00:00Z", false}, // not a leap year: time.Parse refuses it too
		{"1900-02-29T00:00:00Z", false},
		{"2026-04-31T00:00:00Z", false},
		{"2026-03-04T05:06:07+01:00", false},
		{"2026-03-04T05:06:07.Z", false},
		{"2026-03-04T05:06:07.1234567890Z", false},
		{"2026-13-04T05:06:07Z", false},
		{"2026-03-04T24:06:07Z", false},
		{"2026-03-04T05:60:07Z", false},
		{"2026-03-04T05:06:60Z", false},
		{"2026-03-04 05:06:07Z", false},
		{"2026-03-0xT05:06:07Z", false},
		{"2026-03-04T05:06:07", false},
	} {
		got, ok := utcTime([]byte(tc.in))
		if ok != tc.fast {
			t.Errorf("utcTime(%s) ok = %v, want %v", tc.in, ok, tc.fast)
		}
		want, err := time.Parse(time.RFC3339Nano, tc.in)
		if ok && (err != nil || !got.Equal(want) || got.Location() != want.Location()) {
			t.Errorf("utcTime(%s) = %v, time.Parse = %v, %v", tc.in, got, want, err)
		}
	}
	// What json.Marshal writes for UTC times is always read fast.
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10000 {
		tm := at.Add(time.Duration(i) * 7919 * time.Minute).Add(time.Duration(i*104729) % time.Second)
		v, _ := tm.MarshalText()
		got, ok := utcTime(v)
		if !ok || !got.Equal(tm) || got.Location() != time.UTC {
			t.Fatalf("utcTime(%s) = %v, %v; want %v", v, got, ok, tm)
		}
	}
}
