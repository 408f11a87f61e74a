// Package nixtest drives the real nix CLI for end-to-end tests: it builds
// small closures into throw-away stores, publishes them as signed file://
// binary caches, serves those over HTTP and copies paths back out with
// `nix copy`, the way a client of the proxy would.
//
// It is written against Debian's Nix 2.8 and keeps every store under a
// temporary directory ("chroot stores"): nothing touches /nix/store, and no
// nix call may reach the network (substituters are always empty unless a
// test names one).
//
// Only _test.go files should import it.
package nixtest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// baseConfig is the nix.conf every call starts from. A chroot store (one whose
// real directory is not /nix/store) always builds in a chroot, even with the
// sandbox off, so the host's shell and coreutils are bind-mounted in for the
// builders; "?" marks the ones some hosts lack.
const baseConfig = `experimental-features = nix-command
sandbox = false
build-users-group =
substituters =
extra-sandbox-paths = /bin /usr /lib? /lib64?
narinfo-cache-positive-ttl = 0
narinfo-cache-negative-ttl = 0
`

// cmdTimeout bounds a single nix call, so a hung download fails the test
// instead of the whole test binary.
const cmdTimeout = 3 * time.Minute

var available = sync.OnceValue(func() bool {
	path, err := exec.LookPath("nix")
	if err != nil {
		return false
	}
	return exec.Command(path, "--version").Run() == nil
})

// Available reports whether the nix CLI is installed and runs.
func Available() bool { return available() }

// Require skips t when nix is unavailable, or fails it when the CI
// environment variable is set: on CI a missing nix is a broken runner, not a
// reason to pass silently.
func Require(t testing.TB) {
	t.Helper()
	if Available() {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nix CLI not available, and CI is set")
	}
	t.Skip("nix CLI not available")
}

// Env returns os.Environ() plus the settings every nix call needs, followed
// by extra nix.conf lines (for example "trusted-public-keys = k:…"). Later
// lines win, so extra may override the defaults.
func Env(extra ...string) []string {
	conf := baseConfig + strings.Join(extra, "\n") + "\n"
	return append(os.Environ(), "NIX_CONFIG="+conf)
}

// nix runs the nix CLI with env and returns its stdout. On failure the error
// includes stderr, which is where nix explains itself.
func nix(t testing.TB, env []string, args ...string) ([]byte, error) {
	t.Helper()
	return nixStdin(t, env, nil, args...)
}

// nixStdin is nix with stdin as the command's standard input.
func nixStdin(t testing.TB, env []string, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix", args...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("nix %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// mustNix is nix that fails t on error.
func mustNix(t testing.TB, env []string, args ...string) []byte {
	t.Helper()
	out, err := nix(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tempDir is t.TempDir for nix stores and caches. The name is short and
// free of URL metacharacters (t.TempDir embeds the test name, which may hold
// '&', '#' or spaces), and cleanup first makes the read-only store
// directories writable so removal also works for non-root users.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(path, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}
