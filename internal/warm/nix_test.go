package warm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseMetadata(t *testing.T) {
	for _, tc := range []struct {
		file  string
		want  Lock
		short string
	}{
		{"metadata-path.json", Lock{
			URL:          "path:/tmp/w24/flake?lastModified=1796610139&narHash=sha256-28Nw6Avv6uZpkzLoeHieiruzimcUPC3Gnbg2BEaMwNI=",
			NarHash:      "sha256-28Nw6Avv6uZpkzLoeHieiruzimcUPC3Gnbg2BEaMwNI=",
			LastModified: time.Unix(1796610139, 0).UTC(),
		}, "28Nw6Avv6uZp"},
		{"metadata-git.json", Lock{
			URL:          "git+file:///tmp/w24/gflake?ref=master&rev=0b1b4ada47918fa66a466465a343cdcbda513338",
			Rev:          "0b1b4ada47918fa66a466465a343cdcbda513338",
			NarHash:      "sha256-28Nw6Avv6uZpkzLoeHieiruzimcUPC3Gnbg2BEaMwNI=",
			LastModified: time.Unix(1796610140, 0).UTC(),
		}, "0b1b4ada4791"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := parseMetadata(testdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("lock (-want +got):\n%s", d)
			}
			if got.Short() != tc.short {
				t.Errorf("Short() = %q, want %q", got.Short(), tc.short)
			}
		})
	}
	if _, err := parseMetadata(strings.NewReader(`{"locked":{}}`)); err == nil {
		t.Error("metadata without a locked revision: no error")
	}
}

func TestParseDerivations(t *testing.T) {
	g := recordedGraph(t)
	if g.Root != "/nix/store/2kpwwlkz1317125pnjm9p8aigy4gxd1v-config-a.drv" {
		t.Errorf("root = %s", g.Root)
	}
	names := map[string]int{}
	for _, d := range g.Drvs {
		names[d.Name] = len(d.Outputs)
	}
	if d := cmp.Diff(map[string]int{"config-a": 1, "shared-lib": 1, "build-tool": 1, "split": 2}, names); d != "" {
		t.Errorf("derivations' outputs (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"/nix/store/lypjpm6d7gggy18fkpv8rxzxczqm9w9l-config-a"}, g.RootOutputs()); d != "" {
		t.Errorf("root outputs (-want +got):\n%s", d)
	}
	for _, bad := range []string{`[]`, `{}`, `{"/nix/store/a-x.drv": {"inputDrvs": {"/nix/store/b-y.drv": ["out"]}}, "/nix/store/b-y.drv": {"inputDrvs": {"/nix/store/a-x.drv": ["out"]}}}`} {
		if _, err := parseDerivations(strings.NewReader(bad)); err == nil {
			t.Errorf("parseDerivations(%s): no error", bad)
		}
	}
}

// TestParseDerivationFormats: the formats of later Nix (written from the
// 2.8 recording after Nix's derivation JSON schemas: version 3's base
// names, and the current wrapper with inputs.drvs and env objects) read
// into the same graph.
func TestParseDerivationFormats(t *testing.T) {
	want := recordedGraph(t)
	for _, file := range []string{"derivation-show-v3.json", "derivation-show-v5.json"} {
		got, err := parseDerivations(testdata(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-2.8's +got):\n%s", file, d)
		}
	}
}

func recordedGraph(t *testing.T) *Graph {
	t.Helper()
	g, err := parseDerivations(testdata(t, "show-derivation.json"))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// testdata opens a recorded nix output.
func testdata(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// fakeNix writes a shell script standing in for nix.
func fakeNix(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nix")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNixErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("missing", func(t *testing.T) {
		n := &Nix{Command: filepath.Join(t.TempDir(), "no-nix")}
		_, err := n.Metadata(ctx, "path:/x")
		if !errors.Is(err, ErrNoNix) {
			t.Fatalf("err = %v, want ErrNoNix", err)
		}
	})
	t.Run("fails", func(t *testing.T) {
		n := &Nix{Command: fakeNix(t, `echo "evaluating..." >&2; echo "error: flake 'path:/x' does not provide attribute 'nope'" >&2; exit 3`)}
		_, err := n.Derivations(ctx, "path:/x#nope")
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{"nix show-derivation --recursive", "exit status 3", "does not provide attribute 'nope'"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
	t.Run("garbage", func(t *testing.T) {
		n := &Nix{Command: fakeNix(t, `echo '{"locked":'; echo warning >&2`)}
		_, err := n.Metadata(ctx, "path:/x")
		if err == nil || !strings.Contains(err.Error(), "read its output") || !strings.Contains(err.Error(), "warning") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("stderr tail", func(t *testing.T) {
		n := &Nix{Command: fakeNix(t, `i=0; while [ $i -lt 2000 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1`)}
		_, err := n.Metadata(ctx, "path:/x")
		if err == nil || !strings.HasSuffix(err.Error(), "line 1999") || len(err.Error()) > stderrTail+200 {
			t.Fatalf("err = %.300q… (%d bytes)", err, len(err.Error()))
		}
	})
	t.Run("output bound", func(t *testing.T) {
		n := &Nix{Command: fakeNix(t, `echo '{"locked":{"narHash":"sha256-x"}, "pad": "`+strings.Repeat("x", 4096)+`"}'`), MaxOutput: 1024}
		if _, err := n.Metadata(ctx, "path:/x"); err == nil || !strings.Contains(err.Error(), "larger than 1024") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestNixHangs: a nix that hangs (a git fetch that never ends, say) is
// killed at the timeout with every process of its group.
func TestNixHangs(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	n := &Nix{Command: fakeNix(t, `sleep 60 & echo $! > `+pidFile+`; echo "fetching git" >&2; wait`), Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := n.Metadata(context.Background(), "git+ssh://x")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "killed after 300ms") || !strings.Contains(err.Error(), "fetching git") {
		t.Fatalf("err = %v", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("nix's child %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A canceled context ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	n.Timeout = time.Minute
	if _, err := n.Metadata(ctx, "git+ssh://x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: err = %v", err)
	}
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}
