package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Stamped at release time with
// -ldflags "-X main.version=v1.2.3 -X main.commit=abc123" (deploy/release.sh,
// the flake); a plain `go build` leaves them empty and buildInfo falls back
// to what the Go toolchain recorded.
var (
	version string
	commit  string
)

// versionInfo is what `nix-cache-proxy version` prints.
type versionInfo struct {
	Version, Commit, Go string
}

// currentVersion is the stamped version and commit, or else the module
// version and VCS revision the toolchain embedded (present in `go build`
// from a git checkout, absent in `go run` and tests).
func currentVersion() versionInfo {
	bi, _ := debug.ReadBuildInfo()
	return resolveVersion(version, commit, bi)
}

// resolveVersion prefers the stamped values and falls back to bi's (which
// may be nil).
func resolveVersion(version, commit string, bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: version, Commit: commit, Go: runtime.Version()}
	if bi == nil {
		return fillUnknown(v)
	}
	if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	if v.Commit == "" {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && modified == "true" {
			rev += "-dirty"
		}
		v.Commit = rev
	}
	return fillUnknown(v)
}

func fillUnknown(v versionInfo) versionInfo {
	if v.Version == "" {
		v.Version = "devel"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

func (v versionInfo) String() string {
	return fmt.Sprintf("nix-cache-proxy %s (commit %s, %s)", v.Version, v.Commit, v.Go)
}

func versionCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "nix-cache-proxy version: takes no arguments\n")
		return 2
	}
	fmt.Fprintln(stdout, currentVersion())
	return 0
}
