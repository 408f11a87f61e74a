package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestResolveVersion(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main: debug.Module{Version: "v0.0.0-20261207031214-0123abc+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.time", Value: "2026-12-07T03:12:14Z"},
			{Key: "vcs.modified", Value: "true"}},
	}
	devel := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
	tagged := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	tests := []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            versionInfo
	}{
		{"stamped wins", "v2.0.0", "feed", vcs, versionInfo{"v2.0.0", "feed", "", runtime.Version()}},
		{"vcs fallback", "", "", vcs, versionInfo{"v0.0.0-20261207031214-0123abc+dirty", "0123abc-dirty", "2026-12-07T03:12:14Z", runtime.Version()}},
		{"module version", "", "", tagged, versionInfo{"v1.4.0", "unknown", "", runtime.Version()}},
		{"no vcs", "", "", devel, versionInfo{"devel", "unknown", "", runtime.Version()}},
		{"nothing known", "", "", nil, versionInfo{"devel", "unknown", "", runtime.Version()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, resolveVersion(tt.version, tt.commit, tt.bi)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestVersionOfABuild builds the binary as a user does, with a plain go
// build in a git checkout of this source, and with a release's -ldflags:
// version reports the checkout's commit and its time, or the stamped
// version and commit. (Built with -buildvcs=false, as this machine's go
// env says, or in a git worktree, the go command records no commit: then
// it can only say "devel (commit unknown)".)
func TestVersionOfABuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	// A checkout of the source under test (the working tree, which may
	// not be committed, and may be a worktree, which go build does not
	// take for a checkout).
	dir := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "cmd", "internal"} {
		if out, err := exec.Command("cp", "-R", filepath.Join("..", "..", p), dir).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", p, err, out)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "checkout")
	rev := git("rev-parse", "HEAD")
	unix, _ := strconv.ParseInt(git("show", "-s", "--format=%ct"), 10, 64)
	at := time.Unix(unix, 0).UTC().Format(time.RFC3339)

	build := func(args ...string) string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "nix-cache-proxy")
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), "./cmd/proxy")...)
		// As a user's go would: VCS stamping on (this machine's go env
		// may turn it off).
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "GOFLAGS=-buildvcs=auto", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, out)
		}
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	plain := build()
	if want := "(commit " + rev + " of " + at + ", "; !strings.Contains(plain, want) || strings.Contains(plain, "devel") {
		t.Errorf("plain go build: version printed %q, want the checkout's %s", plain, want)
	}
	stamped := build("-ldflags", "-X main.version=v9.8.7 -X main.commit=abc123")
	if want := "nix-cache-proxy v9.8.7 (commit abc123, " + runtime.Version() + ")\n"; stamped != want {
		t.Errorf("stamped build: version printed %q, want %q", stamped, want)
	}
}

func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out, new(bytes.Buffer)); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		if !strings.HasPrefix(out.String(), "nix-cache-proxy ") || !strings.Contains(out.String(), runtime.Version()) {
			t.Errorf("%v printed %q", args, out.String())
		}
	}
}
