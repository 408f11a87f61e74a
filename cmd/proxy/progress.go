package main

import (
	"fmt"
	"io"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
)

// progress renders a prefetch job's status: one line redrawn in place on a
// terminal, a plain line every few seconds otherwise (logs, CI).
type progress struct {
	w        io.Writer
	tty      bool
	start    time.Time
	lastLine time.Time
	drawn    bool
}

const plainEvery = 5 * time.Second

func newProgress(w io.Writer, tty bool) *progress {
	// The first plain line comes after plainEvery: a job that ends sooner
	// needs only its summary.
	now := time.Now()
	return &progress{w: w, tty: tty, start: now, lastLine: now}
}

func (p *progress) update(st prefetch.Status) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", p.line(st))
		p.drawn = true
		return
	}
	if time.Since(p.lastLine) >= plainEvery {
		fmt.Fprintf(p.w, "prefetch %s: %s\n", st.ID, p.line(st))
		p.lastLine = time.Now()
	}
}

func (p *progress) finish(st prefetch.Status) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	took := time.Since(p.start)
	if !st.Finished.IsZero() {
		took = st.Finished.Sub(st.Started)
	}
	fmt.Fprintf(p.w, "prefetch %s %s: %d/%d paths cached (%d already were), %s fetched in %s, %d failed\n",
		st.ID, st.State, st.Cached, st.Paths, st.Skipped, formatBytes(st.BytesDone),
		took.Round(100*time.Millisecond), len(st.Failed))
}

func (p *progress) line(st prefetch.Status) string {
	return progressLine(st, time.Now())
}

// progressLine is the one-line summary of st at now: paths, bytes, the
// average rate since the job started, and the time left at that rate.
func progressLine(st prefetch.Status, now time.Time) string {
	s := fmt.Sprintf("[%d/%d paths] %s / %s", st.Cached, st.Paths, formatBytes(st.BytesDone), formatBytes(st.BytesTotal))
	elapsed := now.Sub(st.Started)
	if elapsed <= 0 || st.BytesDone == 0 {
		return s
	}
	rate := float64(st.BytesDone) / elapsed.Seconds()
	s += fmt.Sprintf("  %s/s", formatBytes(int64(rate)))
	if left := st.BytesTotal - st.BytesDone; left > 0 && rate > 0 {
		s += fmt.Sprintf("  ETA %s", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
	}
	return s
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
