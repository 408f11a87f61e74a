package deploy

import (
	"regexp"
	"strings"
	"testing"
)

// TestChangelog checks CHANGELOG.md keeps the shape release.sh reads and
// Keep a Changelog asks for: an Unreleased section first, then releases
// newest first with a date, each with its link at the bottom.
func TestChangelog(t *testing.T) {
	text := readFile(t, "../CHANGELOG.md")
	heads := regexp.MustCompile(`(?m)^## \[([^\]]+)\](.*)$`).FindAllStringSubmatch(text, -1)
	if len(heads) < 2 || heads[0][1] != "Unreleased" {
		t.Fatalf("CHANGELOG.md: want ## [Unreleased] and then the releases, got %q", heads)
	}
	semver := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)$`)
	date := regexp.MustCompile(`^ - \d{4}-\d{2}-\d{2}$`)
	prev := ""
	for _, h := range heads[1:] {
		if !semver.MatchString(h[1]) || !date.MatchString(h[2]) {
			t.Errorf("CHANGELOG.md: %q is not ## [X.Y.Z] - YYYY-MM-DD", h[0])
		}
		if prev != "" && !versionLess(h[1], prev) {
			t.Errorf("CHANGELOG.md: %s comes after %s: newest first", h[1], prev)
		}
		prev = h[1]
		if !strings.Contains(text, "\n["+h[1]+"]: https://") {
			t.Errorf("CHANGELOG.md: no link for [%s]", h[1])
		}
	}
	if !strings.Contains(text, "\n[Unreleased]: https://") {
		t.Error("CHANGELOG.md: no link for [Unreleased]")
	}
}

// versionLess compares two X.Y.Z versions.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range 3 {
		if len(pa[i]) != len(pb[i]) {
			return len(pa[i]) < len(pb[i])
		}
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return false
}
