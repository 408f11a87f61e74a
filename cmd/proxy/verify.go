package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/verify"
)

func verifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newAdminCommand("verify", stdout, stderr)
	repair := c.fs.Bool("repair", false, "drop bad NARs (file and index row; the narinfo stays, so the NAR is fetched again when asked for, and at once if it is pinned or kept by --keep-latest) and remove stray files; an uploaded NAR has no upstream to fetch it from: it is reported, not dropped")
	deep := c.fs.Bool("deep", false, "also decompress every NAR (none, zstd, xz, bzip2, gzip) and check NarHash and NarSize")
	c.ownFlag("repair", "deep")
	if code, stop := c.parse(args, "verify [--repair] [--deep]"); stop {
		return code
	}
	if c.fs.NArg() > 0 {
		return c.fail(fmt.Errorf("verify takes no paths: it checks the whole cache"))
	}
	return c.withBackend(ctx, func(b adminBackend) (int, error) {
		st, err := b.Verify(ctx, verify.Request{Repair: *repair, Deep: *deep})
		if err != nil {
			return 1, err
		}
		return c.followVerify(ctx, b, st), nil
	})
}

// followVerify prints a verify job's bad entries as they are found, with a
// progress line, then a summary; exit 0 only when the cache is (now) sound.
func (c *adminCommand) followVerify(ctx context.Context, b adminBackend, st verify.Status) int {
	p := newProgress(c.stderr, isTerminal(c.stderr))
	for {
		if len(st.Problems) > 0 {
			p.clear()
			for _, pr := range st.Problems {
				printProblem(c.stdout, pr)
			}
		}
		if st.State != verify.StateRunning {
			break
		}
		p.show("verify "+st.ID, verifyLine(st, time.Now()))
		next, err := b.WaitVerify(ctx, st.ID, 250*time.Millisecond, st.From+len(st.Problems))
		if ctx.Err() != nil {
			p.clear()
			fmt.Fprintf(c.stderr, "interrupted; verify job %s goes on in the server if there is one\n", st.ID)
			return 1
		}
		if err != nil {
			p.clear()
			return c.fail(err)
		}
		st = next
	}
	p.clear()
	fmt.Fprintln(c.stderr, verifySummary(st))
	if !st.Sound() {
		return 1
	}
	return 0
}

func printProblem(w io.Writer, pr verify.Problem) {
	switch {
	case pr.Repaired:
		fmt.Fprintf(w, "repaired %s [%s]: %s\n", pr.Name, pr.Kind, pr.Detail)
	case pr.RepairError != "":
		fmt.Fprintf(w, "bad      %s [%s]: %s; not repaired: %s\n", pr.Name, pr.Kind, pr.Detail, pr.RepairError)
	default:
		fmt.Fprintf(w, "bad      %s [%s]: %s\n", pr.Name, pr.Kind, pr.Detail)
	}
}

// verifyLine is the progress line: files, bytes, rate, time left, and the
// bad entries so far.
func verifyLine(st verify.Status, now time.Time) string {
	s := fmt.Sprintf("[%d/%d files] %s / %s", st.FilesDone, st.Files, formatBytes(st.BytesDone), formatBytes(st.BytesTotal))
	s += rateETA(st.BytesDone, st.BytesTotal, now.Sub(st.Started))
	if st.ProblemsTotal > 0 {
		s += fmt.Sprintf("  %d bad", st.ProblemsTotal)
	}
	return s
}

func verifySummary(st verify.Status) string {
	took := st.Finished.Sub(st.Started).Round(100 * time.Millisecond)
	s := fmt.Sprintf("verify %s %s: %d NAR files (%s) checked in %s", st.ID, st.State, st.FilesDone, formatBytes(st.BytesDone), took)
	switch {
	case st.ProblemsTotal == 0:
		s += ", all sound"
	case st.Unrepaired == 0:
		s += fmt.Sprintf(", %d bad, all repaired", st.ProblemsTotal)
	case st.Repair:
		s += fmt.Sprintf(", %d bad, %d not repaired", st.ProblemsTotal, st.Unrepaired)
	default:
		s += fmt.Sprintf(", %d bad (--repair drops them, and fetches the pinned or kept ones again)", st.ProblemsTotal)
	}
	if st.NotDeep > 0 {
		s += fmt.Sprintf("; %d NAR(s) in a compression without a decoder here had only size and FileHash checked", st.NotDeep)
	}
	if st.Error != "" {
		s += "; stopped: " + st.Error
	}
	return s
}
