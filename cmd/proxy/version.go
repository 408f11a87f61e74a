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

// versionInfo is what `nix-cache-proxy version` prints. Time is the
// commit's time, when the toolchain recorded it.
type versionInfo struct {
	Version, Commit, Time, Go string
}

// currentVersion is the stamped version and commit, or else the module
// version and VCS revision the toolchain embedded: a plain `go build` in a
// git clone records vcs.revision, vcs.time and vcs.modified (not `go run`,
// tests, -buildvcs=false, nor a git worktree, whose .git is a file the go
// command does not recognise).
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
	var rev, modified, at string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			at = s.Value
		}
	}
	if v.Commit == "" && rev != "" {
		v.Commit, v.Time = rev, at
		if modified == "true" {
			v.Commit += "-dirty"
		}
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
	if v.Time != "" {
		return fmt.Sprintf("nix-cache-proxy %s (commit %s of %s, %s)", v.Version, v.Commit, v.Time, v.Go)
	}
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
