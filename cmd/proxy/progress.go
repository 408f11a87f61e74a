package main

import (
	"fmt"
	"io"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
)

// progress renders a prefetch or verify job's status: one line redrawn in place on a
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

// show draws line: in place on a terminal, else as "label: line" every
// plainEvery.
func (p *progress) show(label, line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	if time.Since(p.lastLine) >= plainEvery {
		fmt.Fprintf(p.w, "%s: %s\n", label, line)
		p.lastLine = time.Now()
	}
}

// clear erases the line drawn in place, so other output starts on a clean
// line; the next show draws it again.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

func (p *progress) update(st prefetch.Status) {
	p.show("prefetch "+st.ID, p.line(st))
}

func (p *progress) finish(st prefetch.Status) {
	p.clear()
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
	return s + rateETA(st.BytesDone, st.BytesTotal, now.Sub(st.Started))
}

// rateETA is "  <rate>/s  ETA <left>" for done of total bytes in elapsed,
// or "" before there is a rate.
func rateETA(done, total int64, elapsed time.Duration) string {
	if elapsed <= 0 || done == 0 {
		return ""
	}
	rate := float64(done) / elapsed.Seconds()
	s := fmt.Sprintf("  %s/s", formatBytes(int64(rate)))
	if left := total - done; left > 0 && rate > 0 {
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
