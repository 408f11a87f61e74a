package main

import (
	"bytes"
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolveVersion(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main:     debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "true"}},
	}
	tagged := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	tests := []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            versionInfo
	}{
		{"stamped wins", "v2.0.0", "feed", vcs, versionInfo{"v2.0.0", "feed", runtime.Version()}},
		{"vcs fallback", "", "", vcs, versionInfo{"devel", "0123abc-dirty", runtime.Version()}},
		{"module version", "", "", tagged, versionInfo{"v1.4.0", "unknown", runtime.Version()}},
		{"nothing known", "", "", nil, versionInfo{"devel", "unknown", runtime.Version()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, resolveVersion(tt.version, tt.commit, tt.bi)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
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
