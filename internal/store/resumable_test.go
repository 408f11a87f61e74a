package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResumableNotes: CreateResumable carries on from the mark (the note
// saved without fsync) only on the boot that wrote it, from the durable
// note otherwise, and from nothing when neither is accepted.
func TestResumableNotes(t *testing.T) {
	const name = "0cm3ixfd29y3w6kcfad16v7qv5bdpv9hy2nw2m698j90yrwxkj6c.nar.xz"
	for _, tc := range []struct {
		desc       string
		durable    string // saved with SaveNote; "" none
		mark       string // saved with MarkNote; "" none
		markBoot   string // the boot that wrote the mark
		want       string
		wantBytes  bool // the part file's bytes are kept
		acceptOnly string
	}{
		{desc: "mark of this boot", durable: "d", mark: "m", markBoot: "boot-1", want: "m", wantBytes: true},
		{desc: "mark of another boot", durable: "d", mark: "m", markBoot: "boot-0", want: "d", wantBytes: true},
		{desc: "mark only, another boot", mark: "m", markBoot: "boot-0", want: ""},
		{desc: "mark refused", durable: "d", mark: "m", markBoot: "boot-1", want: "d", wantBytes: true, acceptOnly: "d"},
		{desc: "durable only", durable: "d", want: "d", wantBytes: true},
		{desc: "nothing", want: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			d, err := OpenDirFiles(dir)
			if err != nil {
				t.Fatal(err)
			}
			d.boot = tc.markBoot
			p, _, err := d.CreateResumable(name, func([]byte) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Write([]byte("bytes")); err != nil {
				t.Fatal(err)
			}
			if tc.durable != "" {
				if err := p.SaveNote([]byte(tc.durable)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.mark != "" {
				if err := p.MarkNote([]byte(tc.mark)); err != nil {
					t.Fatal(err)
				}
			}
			p.(*resumablePart).f.Close() // what a killed process leaves

			d.boot = "boot-1"
			p, note, err := d.CreateResumable(name, func(n []byte) bool { return tc.acceptOnly == "" || string(n) == tc.acceptOnly })
			if err != nil {
				t.Fatal(err)
			}
			defer p.Discard()
			if string(note) != tc.want {
				t.Errorf("note %q, want %q", note, tc.want)
			}
			st, err := os.Stat(filepath.Join(dir, "partial", name))
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Size() > 0; got != tc.wantBytes {
				t.Errorf("part file kept its bytes: %v, want %v", got, tc.wantBytes)
			}
		})
	}
}
