//go:build linux

package powercuttest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mount is a generation on t's temp dirs, unmounted at the end.
func mount(t *testing.T, live string) (*FS, string) {
	t.Helper()
	mnt := t.TempDir()
	p, err := Mount(live, t.TempDir(), mnt)
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cut(); p.Unmount() })
	return p, mnt
}

// survive cuts the power and returns what is left, as name → content
// ("/" after a directory's name).
func survive(t *testing.T, p *FS, tear *rand.Rand) map[string]string {
	t.Helper()
	p.Cut()
	if err := p.Unmount(); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := p.Survivors(dst, tear); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	filepath.WalkDir(dst, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dst {
			return err
		}
		rel, _ := filepath.Rel(dst, path)
		if d.IsDir() {
			got[rel+"/"] = ""
			return nil
		}
		b, _ := os.ReadFile(path)
		got[rel] = string(b)
		return nil
	})
	return got
}

func syncPath(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWhatSurvives(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, mnt string)
		want map[string]string
	}{
		{"nothing synced", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "a"), "hello", false)
		}, map[string]string{"old": "old"}},
		{"file synced, directory not", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "a"), "hello", true)
		}, map[string]string{"old": "old"}},
		{"directory synced, file not", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "a"), "hello", false)
			syncPath(t, mnt)
		}, map[string]string{"old": "old", "a": ""}},
		{"both synced", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "a"), "hello", true)
			syncPath(t, mnt)
		}, map[string]string{"old": "old", "a": "hello"}},
		{"write after the sync is lost", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "a"), "hello", true)
			syncPath(t, mnt)
			f, _ := os.OpenFile(filepath.Join(mnt, "a"), os.O_WRONLY, 0)
			f.WriteAt([]byte("J"), 0)
			f.Close()
		}, map[string]string{"old": "old", "a": "hello"}},
		{"rename without the directory's sync", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "tmp"), "new", true)
			os.Rename(filepath.Join(mnt, "tmp"), filepath.Join(mnt, "old"))
		}, map[string]string{"old": "old"}},
		{"rename over, directory synced", func(t *testing.T, mnt string) {
			write(t, filepath.Join(mnt, "tmp"), "new", true)
			os.Rename(filepath.Join(mnt, "tmp"), filepath.Join(mnt, "old"))
			syncPath(t, mnt)
		}, map[string]string{"old": "new"}},
		{"unlink without the directory's sync", func(t *testing.T, mnt string) {
			os.Remove(filepath.Join(mnt, "old"))
			write(t, filepath.Join(mnt, "b"), "b", true) // may reuse old's inode
		}, map[string]string{"old": "old"}},
		{"truncate synced", func(t *testing.T, mnt string) {
			f, _ := os.OpenFile(filepath.Join(mnt, "old"), os.O_RDWR, 0)
			f.Truncate(1)
			f.Sync()
			f.Close()
		}, map[string]string{"old": "o"}},
		{"truncate then grow", func(t *testing.T, mnt string) {
			f, _ := os.OpenFile(filepath.Join(mnt, "old"), os.O_RDWR, 0)
			f.Truncate(1)
			f.Truncate(3)
			f.Sync()
			f.Close()
		}, map[string]string{"old": "o\x00\x00"}},
		{"new directory needs its parent's sync", func(t *testing.T, mnt string) {
			os.Mkdir(filepath.Join(mnt, "d"), 0o755)
			write(t, filepath.Join(mnt, "d", "x"), "x", true)
			syncPath(t, filepath.Join(mnt, "d"))
		}, map[string]string{"old": "old"}},
		{"new directory, all synced", func(t *testing.T, mnt string) {
			os.Mkdir(filepath.Join(mnt, "d"), 0o755)
			write(t, filepath.Join(mnt, "d", "x"), "x", true)
			syncPath(t, filepath.Join(mnt, "d"))
			syncPath(t, mnt)
		}, map[string]string{"old": "old", "d/": "", "d/x": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := t.TempDir()
			os.WriteFile(filepath.Join(live, "old"), []byte("old"), 0o644)
			p, mnt := mount(t, live)
			tt.do(t, mnt)
			if diff := cmp.Diff(tt.want, survive(t, p, nil)); diff != "" {
				t.Errorf("survivors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTear: with tearing, each unsynced page is there or not (a hole past
// the synced end), never anything else, and the synced prefix always is.
func TestTear(t *testing.T) {
	live := t.TempDir()
	p, mnt := mount(t, live)
	synced := bytes.Repeat([]byte("s"), 3*pageSize)
	path := filepath.Join(mnt, "f")
	write(t, path, string(synced), true)
	syncPath(t, mnt)
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte("u"), 8*pageSize), pageSize)
	f.Close()
	got := []byte(survive(t, p, rand.New(rand.NewPCG(1, 2)))["f"])
	if len(got) < len(synced) || len(got)%pageSize != 0 {
		t.Fatalf("torn file of %d bytes", len(got))
	}
	var torn, kept int
	for pg := 0; pg < len(got); pg += pageSize {
		switch page := got[pg : pg+pageSize]; {
		case pg == 0 && bytes.Equal(page, synced[:pageSize]):
		case bytes.Equal(page, bytes.Repeat([]byte("u"), pageSize)):
			torn++
		case pg < len(synced) && bytes.Equal(page, synced[pg:pg+pageSize]):
			kept++
		case pg >= len(synced) && bytes.Equal(page, make([]byte, pageSize)):
			// A hole before a later page that made it.
		default:
			t.Fatalf("page %d is neither synced nor written bytes", pg/pageSize)
		}
	}
	if torn == 0 {
		t.Errorf("no unsynced page reached the disk (seeded coin: some should)")
	}
	if st := p.Stats(); st.FileSyncs != 1 || st.DirSyncs != 1 {
		t.Errorf("stats %+v, want 1 file sync and 1 directory sync", st)
	}
}
