package recompress

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"testing"
)

func TestWorthwhile(t *testing.T) {
	nar, err := os.ReadFile("../nardecode/testdata/nar")
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat(nar, (4<<20)/len(nar)+1)
	random := make([]byte, 4<<20)
	rand.Read(random)
	// A compressible header in front of random bytes: the samples further
	// in decide.
	headed := append(bytes.Clone(text[:256<<10]), random...)
	// Random bytes in front of a compressible rest.
	tailed := append(bytes.Clone(random[:256<<10]), text[:4<<20]...)
	tests := []struct {
		name string
		file []byte
		want bool
	}{
		{"compressible", text, true},
		{"small compressible", text[:100<<10], true},
		{"random", random, false},
		{"small random", random[:100<<10], false},
		{"compressible header, random rest", headed, false},
		{"random header, compressible rest", tailed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.file)
			got, err := Worthwhile(r, int64(len(tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Worthwhile = %v, want %v", got, tt.want)
			}
			if pos, _ := r.Seek(0, io.SeekCurrent); pos != 0 {
				t.Fatalf("left the file at %d, want its start", pos)
			}
		})
	}
}
