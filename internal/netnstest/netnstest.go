// Package netnstest makes Linux network namespaces for tests that need a
// real network between two hosts: a namespace per host, joined by a veth
// pair, whose link a test takes down or whose packets it drops. Every
// namespace gets a unique name and is deleted when the test ends, with
// the links and nftables rules inside it.
//
// It needs root and iproute2's ip: Require skips without them, or fails
// when CI is set. Only _test.go files should import it.
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Require skips t unless it runs as root with ip on PATH and namespaces
// work, or fails it when the CI environment variable is set.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = tool + " not on PATH"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("network namespace test cannot run (%s), and CI is set", why)
	}
	t.Skipf("network namespace test: %s", why)
}

// New creates a network namespace with its loopback up and returns its
// name; it is deleted when t ends.
func New(t testing.TB) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := "nctest-" + hex.EncodeToString(b[:])
	Run(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Veth joins namespaces a and b with a veth pair, addresses addrA and
// addrB (CIDR, e.g. 10.231.0.1/30) on its ends, and returns the ends'
// interface names (the same in both namespaces' views: "veth-a", "veth-b").
func Veth(t testing.TB, a, b, addrA, addrB string) (ifA, ifB string) {
	t.Helper()
	ifA, ifB = "veth-a", "veth-b"
	Run(t, "", "ip", "link", "add", ifA, "netns", a, "type", "veth", "peer", "name", ifB, "netns", b)
	Run(t, a, "ip", "addr", "add", addrA, "dev", ifA)
	Run(t, b, "ip", "addr", "add", addrB, "dev", ifB)
	Run(t, a, "ip", "link", "set", ifA, "up")
	Run(t, b, "ip", "link", "set", ifB, "up")
	return ifA, ifB
}

// Command returns a command that runs inside namespace ns ("" for the
// test's own).
func Command(ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs a command inside ns and fails t if it fails.
func Run(t testing.TB, ns, name string, args ...string) string {
	t.Helper()
	out, err := Command(ns, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %q): %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(bytes.TrimSpace(out))
}

// Do runs f on an OS thread moved into namespace ns: sockets f opens
// (listeners, connections) belong to ns, and stay there after f returns.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread goes back to the test's namespace before it is
		// unlocked; if that fails it is left locked and ends with this
		// goroutine.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a TCP listener on addr inside ns, closed when t ends.
func Listen(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// HTTPClient returns a client whose connections are opened inside ns: the
// test reaches servers that listen on ns's loopback.
func HTTPClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 30 * time.Second}
}
