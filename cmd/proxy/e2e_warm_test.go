package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// warmFlake is the test flake: two "configurations" sharing a path, each
// with a "builder image" of 3 MiB (config-b's a variant the test changes),
// and a build tool config-a needs to build but not to run. No inputs, no
// nixpkgs: builtins.derivation with /bin/sh.
const warmFlake = `{
  outputs = { self }: let
    sys = "@SYS@";
    mk = name: script: builtins.derivation {
      inherit name; system = sys; builder = "/bin/sh"; args = [ "-c" script ];
      PATH = "/usr/bin:/bin"; nonce = "@NONCE@";
    };
    tool = mk "warm-build-tool" "echo tool > $out";
    shared = mk "warm-shared" "echo shared > $out";
    image = v: mk "warm-builder-image-${v}" "mkdir $out && head -c 3145728 /dev/urandom > $out/disk.img";
    imageA = image "a";
    imageB = image "@VARIANT@";
    config = name: img: mk "warm-config-${name}" "echo ${shared} ${img} $(cat ${tool}) > $out";
  in {
    packages.${sys} = {
      config-a = config "a" imageA;
      config-b = config "b" imageB;
      image-b = imageB;
    };
  };
}
`

// TestWarmFollowsFlakeRealNix: a proxy with a [[warm]] table follows a
// path: flake built with real nix into a signed upstream. It warms each
// revision's configurations and image variant as the lock changes, keeps
// the last two revisions' pins, records what nobody has with the attribute
// and revision and pulls it in when "CI" pushes it, `coverage` says what
// must be built, and a real Nix client then substitutes every warmed path
// from the proxy with the upstream stopped.
func TestWarmFollowsFlakeRealNix(t *testing.T) {
	bin := e2eBinary(t, true)
	sys := map[string]string{"amd64": "x86_64-linux", "arm64": "aarch64-linux"}[runtime.GOARCH]
	if sys == "" || runtime.GOOS != "linux" {
		t.Skip("the test flake builds for Linux on amd64 or arm64")
	}
	step := stepLogger(t)
	dir, err := os.MkdirTemp("", "warmflake-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	flakeDir, nixStore := filepath.Join(dir, "flake"), filepath.Join(dir, "store")
	if err := os.Mkdir(flakeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	flake := "path:" + flakeDir
	attrs := []string{"packages." + sys + ".config-a", "packages." + sys + ".config-b", "packages." + sys + ".image-b"}
	installables := make([]string, len(attrs))
	for i, a := range attrs {
		installables[i] = flake + "#" + a
	}
	// The proxy, and the commands that evaluate, run nix on the test's
	// store: eval writes its .drv files there.
	t.Setenv("NIX_CONFIG", nixtest.FlakeConfig(nixStore))
	evalNix := &warm.Nix{}
	// revision writes variant's flake and builds it; it returns the lock
	// and the outputs of config-a, config-b and image-b, in that order.
	revision := func(variant string) (warm.Lock, []string) {
		t.Helper()
		text := strings.NewReplacer("@SYS@", sys, "@NONCE@", hex.EncodeToString(nonce), "@VARIANT@", variant).Replace(warmFlake)
		if err := os.WriteFile(filepath.Join(flakeDir, "flake.nix"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		built := nixtest.BuildFlake(t, nixStore, installables...)
		var outs []string
		for _, suffix := range []string{"-warm-config-a", "-warm-config-b", "-warm-builder-image-" + variant} {
			i := slices.IndexFunc(built, func(p string) bool { return strings.HasSuffix(p, suffix) })
			if i < 0 {
				t.Fatalf("no %s in what nix built: %v", suffix, built)
			}
			outs = append(outs, built[i])
		}
		lock, err := evalNix.Metadata(t.Context(), flake)
		if err != nil {
			t.Fatal(err)
		}
		return lock, outs
	}

	rev1, outs1 := revision("v1")
	up := nixtest.NewCache(t, "warm-upstream-1")
	nixtest.CopyPaths(t, nixStore, up, outs1...)
	upURL, stopUpstream := nixtest.ServeDir(t, up.Dir)
	step("revision 1 (%s) built and copied to a signed upstream", rev1.Short())

	config := filepath.Join(dir, "proxy.toml")
	conf := fmt.Sprintf("[misses]\nrecheck = \"1s\"\nrecheck-max = \"2s\"\nnegative-ttl = \"1s\"\n\n[[warm]]\nflake = %q\nattrs = [%q, %q, %q]\nkeep = 2\ninterval = \"10s\"\n",
		flake, attrs[0], attrs[1], attrs[2])
	if err := os.WriteFile(config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxyArgs(t, bin, t.TempDir(), up.PublicKey, []string{upURL}, "--config", config)
	srv := "--server=" + p.url
	client, err := admin.NewClient(p.url, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// warmedAt waits until every attribute's last warm is of lock, and
	// complete as said, and no prefetch job runs.
	warmedAt := func(lock warm.Lock, complete map[string]bool) map[string]warm.Status {
		t.Helper()
		var got map[string]warm.Status
		poll(t, "the proxy warms "+lock.Short(), 60*time.Second, func() (bool, string) {
			list, err := client.WarmStatus(ctx)
			if err != nil {
				return false, err.Error()
			}
			got = map[string]warm.Status{}
			for _, s := range list {
				got[strings.TrimPrefix(s.Target, flake+"#")] = s
			}
			for _, a := range attrs {
				s, ok := got[a]
				if !ok || s.Rev != lock.Revision() || s.Complete() != complete[a] {
					return false, fmt.Sprintf("%+v", list)
				}
			}
			jobs, err := client.Jobs(ctx)
			if err != nil {
				return false, err.Error()
			}
			for _, j := range jobs {
				if j.State == "running" {
					return false, fmt.Sprintf("prefetch job %s running", j.ID)
				}
			}
			return true, ""
		})
		return got
	}
	all := map[string]bool{attrs[0]: true, attrs[1]: true, attrs[2]: true}
	st := warmedAt(rev1, all)
	step("the proxy warmed revision 1: config-a %d paths (%d cached)", st[attrs[0]].Paths, st[attrs[0]].Cached)
	r := cli(t, bin, 0, "coverage", srv, installables[1])
	if !strings.Contains(r.stdout, "everything substitutes") || !strings.Contains(r.stdout, rev1.Short()) {
		t.Errorf("coverage of config-b at revision 1:\n%s", r.stdout)
	}

	// Revision 2: a new image variant, pushed by "CI" before the proxy looks.
	rev2, outs2 := revision("v2")
	nixtest.CopyPaths(t, nixStore, up, outs2...)
	warmedAt(rev2, all)
	step("revision 2 (%s): the proxy warmed the new variant", rev2.Short())

	// Revision 3 is not pushed yet: the proxy finds its image nobody's.
	rev3, outs3 := revision("v3")
	st = warmedAt(rev3, map[string]bool{attrs[0]: true})
	// config-b builds its image and the build tool, which nobody pushed
	// (it is not in config-b's runtime closure).
	if st[attrs[2]].Missing != 1 || st[attrs[2]].Builds != 1 || st[attrs[1]].Builds != 3 {
		t.Errorf("revision 3 before it is pushed: %+v", st)
	}
	r = cli(t, bin, 1, "coverage", srv, installables[1])
	for _, want := range []string{"must build 3 derivation(s)", "warm-config-b", "warm-builder-image-v3", "warm-build-tool", rev3.Short()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("coverage of config-b at revision 3 lacks %q:\n%s", want, r.stdout)
		}
	}
	poll(t, "the miss log names revision 3's image", 5*time.Second, func() (bool, string) {
		m := missOf(t, bin, srv, narinfo.HashOfStorePath(outs3[2]))
		return m.Outcome == store.OutcomeNotFound && m.Attr == installables[2] && m.Rev == rev3.Revision(), fmt.Sprintf("%+v", m)
	})
	step("revision 3 (%s) not pushed: coverage exit 1, its image in the miss log with attribute and revision", rev3.Short())

	// Keep 2: revision 1's variant is unpinned, revision 2's stays.
	pins, err := client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pinned := map[string]bool{}
	for _, p := range pins {
		pinned[p.StorePath] = true
	}
	for _, c := range []struct {
		path string
		want bool
	}{{outs1[2], false}, {outs1[1], false}, {outs2[2], true}, {outs2[1], true}, {outs3[2], true}, {outs1[0], true}} {
		if pinned[c.path] != c.want {
			t.Errorf("%s pinned: %v, want %v", c.path, pinned[c.path], c.want)
		}
	}
	step("pins: revisions 2 and 3 kept, revision 1's variant unpinned")

	// "CI" pushes revision 3: the watcher pulls it in, the next look
	// finds everything substitutes.
	nixtest.CopyPaths(t, nixStore, up, outs3...)
	warmedAt(rev3, all)
	step("revision 3 pushed: pulled in and warmed whole")
	cli(t, bin, 0, append([]string{"coverage", srv}, installables...)...)

	// The upstream goes away: a real client substitutes every warmed path
	// of the kept revisions from the proxy alone.
	stopUpstream()
	want := append(append([]string{}, outs3...), outs2[1], outs2[2])
	dest, out, err := nixtest.CopyFrom(t, p.url, up.PublicKey, want...)
	if err != nil {
		t.Fatalf("nix copy from the proxy with the upstream stopped: %v\n%s", err, out)
	}
	got := nixtest.ClosureOf(t, dest, want...)
	for _, w := range nixtest.ClosureOf(t, nixStore, want...) {
		if !slices.Contains(got, w) {
			t.Errorf("%s not copied", w)
		}
	}
	step("upstream stopped: nix copied %d paths of revisions 2 and 3 from the proxy", len(got))
}
