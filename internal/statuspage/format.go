package statuspage

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// funcs are the template's formatters: numbers a person reads at a glance
// ("1.2 GiB", "87.5 %", "3 min ago"), never raw counters.
var funcs = template.FuncMap{
	"bytes":   formatBytes,
	"num":     formatNum,
	"pct":     formatPct,
	"frac":    frac,
	"width":   width,
	"ago":     ago,
	"uptime":  uptime,
	"latency": latency,
	"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"path":    splitPath,
	"host":    host,
	"add":     func(a, b int64) int64 { return a + b },
	"div": func(a, b int64) int64 {
		if b == 0 {
			return 0
		}
		return a / b
	},
}

// toInt64 accepts the integer types a Snapshot holds.
func toInt64(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	case uint64:
		return int64(min(n, math.MaxInt64))
	case float64:
		return int64(n)
	}
	return 0
}

// formatBytes is n in IEC units: "512 B", "12.3 MiB", "1.2 GiB".
func formatBytes(v any) string {
	n := toInt64(v)
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f >= 100 {
		return fmt.Sprintf("%.0f %s", f, units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// formatNum groups thousands: "12,345".
func formatNum(v any) string {
	n := toInt64(v)
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// formatPct is a ratio in [0, 1] as "87.5 %"; a negative ratio (nothing
// to divide) is a dash.
func formatPct(r float64) string {
	switch {
	case r < 0 || math.IsNaN(r):
		return "–"
	case r >= 1:
		return "100 %"
	case r > 0 && r < 0.001:
		return "< 0.1 %"
	}
	return strconv.FormatFloat(math.Floor(r*1000)/10, 'f', 1, 64) + " %"
}

// frac is a/b, or -1 when b is not positive (unknown size).
func frac(a, b any) float64 { return ratio(toInt64(a), toInt64(b)) }

// width is a bar segment's CSS width for a ratio, clamped to [0, 100] %.
func width(r float64) template.CSS {
	if r < 0 || math.IsNaN(r) {
		r = 0
	}
	return template.CSS("width:" + strconv.FormatFloat(min(r, 1)*100, 'f', 2, 64) + "%")
}

// ago is how long before now t was: "just now", "42 s ago", "3 min ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := now.Sub(t)
	if d < 5*time.Second {
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// uptime is seconds as "3 h 12 min".
func uptime(seconds float64) string {
	return shortDuration(time.Duration(seconds * float64(time.Second)))
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m > 0 && h < 10 {
			return fmt.Sprintf("%d h %d min", h, m)
		}
		return fmt.Sprintf("%d h", h)
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// latency is seconds as "12 ms" or "1.20 s"; 0 (no requests) is a dash.
func latency(seconds float64) string {
	switch {
	case seconds <= 0:
		return "–"
	case seconds < 0.001:
		return "< 1 ms"
	case seconds < 1:
		return fmt.Sprintf("%.0f ms", seconds*1000)
	}
	return fmt.Sprintf("%.2f s", seconds)
}

// pathParts splits a store path for display: the hash is dimmed so the
// name stands out, yet the whole path stays selectable.
type pathParts struct{ Dir, Hash, Name string }

func splitPath(p string) pathParts {
	rest, ok := strings.CutPrefix(p, narinfo.StoreDir+"/")
	if !ok {
		if narinfo.ValidHash(p) {
			return pathParts{Hash: p}
		}
		return pathParts{Name: p}
	}
	hash, name, _ := strings.Cut(rest, "-")
	if !narinfo.ValidHash(hash) {
		return pathParts{Name: p}
	}
	if name != "" {
		name = "-" + name
	}
	return pathParts{Dir: narinfo.StoreDir + "/", Hash: hash, Name: name}
}

// host drops the scheme from an upstream's URL, which is nearly always
// https: the host is what tells upstreams apart.
func host(u string) string {
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return rest
	}
	return strings.TrimPrefix(u, "http://")
}
