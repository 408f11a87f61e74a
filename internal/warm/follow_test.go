package warm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// followEnv is a Follower over a fake nix whose lock is a file the test
// rewrites, and a proxy that has everything.
type followEnv struct {
	dir   string
	board *Board
	mu    sync.Mutex
	warms []string // revisions warmed, in order
}

func newFollowEnv(t *testing.T) *followEnv {
	t.Helper()
	e := &followEnv{dir: t.TempDir(), board: NewBoard()}
	e.setRev(t, "rev1")
	return e
}

func (e *followEnv) setRev(t *testing.T, rev string) {
	t.Helper()
	meta := `{"url": "git+file:///macs?rev=` + rev + `", "locked": {"rev": "` + rev + `", "narHash": "sha256-x", "lastModified": 1}}`
	if err := os.WriteFile(filepath.Join(e.dir, "meta"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nixScript answers `flake metadata` from the meta file (failing while a
// file "fail" exists, hanging while "hang" does) and `show-derivation`
// with the recorded closure.
func (e *followEnv) nixScript(t *testing.T) *Nix {
	recorded, err := filepath.Abs("testdata/show-derivation.json")
	if err != nil {
		t.Fatal(err)
	}
	return &Nix{Timeout: 2 * time.Second, Command: fakeNix(t, `d=`+e.dir+`
[ -e $d/hang ] && exec sleep 60
[ -e $d/fail ] && { echo "error: unable to download 'https://github.com/me/macs': HTTP error 503" >&2; exit 1; }
case "$*" in
*"flake metadata --json --refresh"*) cat $d/meta ;;
*show-derivation*) cat `+recorded+` ;;
*) exit 2 ;;
esac`)}
}

func (e *followEnv) touch(t *testing.T, name string, on bool) {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if on {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func (e *followEnv) warmed() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.warms...)
}

func (e *followEnv) start(t *testing.T, w Watch) {
	t.Helper()
	f := NewFollower(FollowOptions{
		Nix:     e.nixScript(t),
		Watches: []Watch{w},
		Locate: func(ctx context.Context, paths []string) ([]PathState, error) {
			out := make([]PathState, len(paths))
			for i, p := range paths {
				out[i] = PathState{Path: p, Where: Cached}
			}
			return out, nil
		},
		Warm: func(ctx context.Context, r Report, keep int) error {
			e.mu.Lock()
			e.warms = append(e.warms, r.Lock.Rev)
			e.mu.Unlock()
			e.board.Warmed(r, time.Now())
			return nil
		},
		Board:    e.board,
		RetryMin: 20 * time.Millisecond,
		RetryMax: 80 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFollowerFollowsTheLock(t *testing.T) {
	e := newFollowEnv(t)
	e.start(t, Watch{Flake: "git+file:///macs", Attrs: []string{"packages.x.a"}, Keep: 2, Interval: 50 * time.Millisecond})
	waitFor(t, "the first warm", func() bool { return len(e.warmed()) == 1 })
	time.Sleep(200 * time.Millisecond) // four more looks at an unchanged lock
	if got := e.warmed(); strings.Join(got, " ") != "rev1" {
		t.Fatalf("warms of an unchanged lock: %v, want [rev1]", got)
	}
	e.setRev(t, "rev2")
	waitFor(t, "the new revision's warm", func() bool { return len(e.warmed()) == 2 })
	if got := e.warmed(); got[1] != "rev2" {
		t.Fatalf("warms: %v", got)
	}

	// The flake cannot be fetched: shown, counted, retried; then it heals.
	e.touch(t, "fail", true)
	waitFor(t, "two failures in a row", func() bool {
		s := e.board.List()
		return len(s) == 1 && s[0].Failures >= 2
	})
	s := e.board.List()[0]
	if !strings.Contains(s.Error, "HTTP error 503") || !strings.Contains(s.Error, "exit status 1") || s.Rev != "rev2" || s.NextTry.IsZero() {
		t.Errorf("status after failures: %+v", s)
	}
	e.touch(t, "fail", false)
	waitFor(t, "recovery", func() bool {
		s := e.board.List()[0]
		return s.Error == "" && s.Failures == 0
	})
	if s := e.board.List()[0]; s.Errors < 2 || !s.Complete() {
		t.Errorf("status after recovery: %+v", s)
	}
}

// TestFollowerHungNix: a nix that hangs is killed at its timeout, the try
// counts as failed, and stopping the follower does not wait for it.
func TestFollowerHungNix(t *testing.T) {
	e := newFollowEnv(t)
	e.touch(t, "hang", true)
	// The watch's own timeout beats the Nix's (2s).
	e.start(t, Watch{Flake: "git+file:///macs", Attrs: []string{"packages.x.a"}, Interval: time.Hour, Timeout: time.Second})
	waitFor(t, "the hung try to fail", func() bool {
		s := e.board.List()
		return len(s) == 1 && s[0].Failures >= 1
	})
	if s := e.board.List()[0]; !strings.Contains(s.Error, "killed after 1s") {
		t.Errorf("status: %+v", s)
	}
	// The next try hangs too; the cleanup's cancel must end it at once.
}
