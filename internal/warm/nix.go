// Package warm ties the cache to a flake: it evaluates a flake attribute
// with the host's nix to the derivations of its closure (nothing is
// built), works out which of their outputs a client would substitute and
// which it would have to build, and follows the flake's lock so a new
// revision is warmed before anyone waits for it.
package warm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// ErrNoNix means the nix command could not be started at all.
var ErrNoNix = errors.New("warm: nix not found")

// Nix runs the host's nix command. Its zero value runs "nix" from PATH
// with the defaults below.
type Nix struct {
	// Command is the nix executable; default "nix" (looked up in PATH).
	Command string
	// Args go before every command's own arguments, e.g. "--store", DIR.
	// "--extra-experimental-features 'nix-command flakes'" is always
	// passed: Nix 2.8 (Debian's) has flakes behind it, newer Nix accepts
	// it as a no-op.
	Args []string
	// Env replaces the environment when not nil (os.Environ() otherwise).
	Env []string
	// Timeout bounds one nix command; default 10m. The whole process
	// group is killed when it passes or the context ends.
	Timeout time.Duration
	// MaxMemory bounds the data segment of one nix command (RLIMIT_DATA,
	// Linux only); default 8 GiB, negative: no bound.
	MaxMemory int64
	// MaxOutput bounds what one command may print on stdout; default
	// 512 MiB.
	MaxOutput int64
	// Refresh has Metadata look the flake up again (--refresh) instead of
	// trusting what nix fetched within its tarball-ttl (an hour by
	// default): a follower that polls must see a push at once.
	Refresh bool
}

func (n *Nix) withDefaults() Nix {
	o := *n
	if o.Command == "" {
		o.Command = "nix"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 8 << 30
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = 512 << 20
	}
	return o
}

// stderrTail is how much of nix's stderr an error carries.
const stderrTail = 2048

// run runs nix with args and hands its stdout to read while it runs. An
// error names the command, its exit status and the tail of its stderr.
func (n *Nix) run(ctx context.Context, read func(io.Reader) error, args ...string) error {
	o := n.withDefaults()
	full := append([]string{"--extra-experimental-features", "nix-command flakes"}, o.Args...)
	full = append(full, args...)
	what := "nix " + strings.Join(args[:min(len(args), 2)], " ")
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Command, full...)
	cmd.Env = o.Env
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	ownGroup(cmd)
	// A nix that ignores the kill keeps its pipes open; do not wait for
	// it forever.
	cmd.WaitDelay = 5 * time.Second
	tail := &tailBuffer{max: stderrTail}
	cmd.Stderr = tail
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s: %w (install Nix, or put nix on the PATH)", ErrNoNix, o.Command, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	limitMemory(cmd, o.MaxMemory)
	lim := &io.LimitedReader{R: out, N: o.MaxOutput + 1}
	readErr := read(lim)
	if lim.N <= 0 {
		readErr = fmt.Errorf("output larger than %d bytes", o.MaxOutput)
		cancel() // draining it would take as long as nix likes
	}
	// Let nix finish (within the timeout) even when its output was not
	// understood: its exit status and stderr tell more than the decoder.
	io.Copy(io.Discard, out)
	waitErr := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case outer.Err() != nil:
		return fmt.Errorf("%s: %w", what, outer.Err())
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("%s: killed after %s%s", what, o.Timeout, tail.suffix())
	case errors.As(waitErr, &exit) && lim.N > 0:
		return fmt.Errorf("%s: %w%s", what, waitErr, tail.suffix())
	case readErr != nil:
		return fmt.Errorf("%s: read its output: %w%s", what, readErr, tail.suffix())
	case waitErr != nil:
		return fmt.Errorf("%s: %w%s", what, waitErr, tail.suffix())
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// suffix is ": <stderr tail>" for an error message, or "".
func (t *tailBuffer) suffix() string {
	s := string(bytes.TrimSpace(t.buf))
	if s == "" {
		return ""
	}
	return ": " + s
}
