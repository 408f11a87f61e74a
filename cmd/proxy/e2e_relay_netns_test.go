package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/netnstest"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// relayLAN is a laptop and a LAN cache in network namespaces of their
// own, joined by a veth pair: the cache serves a closure real Nix wrote,
// the laptop runs the relay and the real Nix client, and has an
// "upstream" on its loopback that serves the same closure.
type relayLAN struct {
	t           *testing.T
	lan, laptop string // namespaces
	lanIf       string // the cache's end of the veth pair
	cacheURL    string // in lan, as the laptop reaches it
	upstreamURL string // on the laptop's loopback
	relayURL    string // on the laptop's loopback
	relayLog    *lockedBuffer
	client      *http.Client // opens its connections in the laptop
	closure     nixtest.Closure
	cache       nixtest.Cache
}

const (
	relayLANCacheAddr  = "10.231.0.1"
	relayLANLaptopAddr = "10.231.0.2"
)

func newRelayLAN(t *testing.T, imageSize int64, relayArgs ...string) *relayLAN {
	n := newLANPair(t, imageSize)
	n.cacheURL, _ = nixtest.ServeDirOn(t, netnstest.Listen(t, n.lan, relayLANCacheAddr+":0"), n.cache.Dir)
	n.relayURL = n.startRelay("127.0.0.1:5576", append([]string{"--cache", n.cacheURL}, relayArgs...)...)
	n.waitFor("the relay to forward", 10*time.Second, func() bool { return n.lookup() == http.StatusOK })
	return n
}

// newLANPair makes the namespaces, the veth pair between them, the closure
// and the laptop's upstream; the cache and the relay are the test's.
func newLANPair(t *testing.T, imageSize int64) *relayLAN {
	e2eBinary(t, true)
	netnstest.Require(t, "nft")
	n := &relayLAN{t: t, lan: netnstest.New(t), laptop: netnstest.New(t), relayLog: &lockedBuffer{}}
	n.closure, n.cache = nixtest.BuildClosure(t, imageSize)
	n.lanIf, _ = netnstest.Veth(t, n.lan, n.laptop, relayLANCacheAddr+"/30", relayLANLaptopAddr+"/30")
	n.upstreamURL, _ = nixtest.ServeDirOn(t, netnstest.Listen(t, n.laptop, "127.0.0.1:0"), n.cache.Dir)
	n.client = netnstest.HTTPClient(n.laptop)
	return n
}

// start runs the proxy binary with args inside ns until the test ends,
// its output into log.
func (n *relayLAN) start(ns string, log *lockedBuffer, args ...string) {
	bin, _ := proxyBinary()
	cmd := netnstest.Command(ns, bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			n.t.Errorf("%s: %v", args[0], err)
		}
		if n.t.Failed() {
			n.t.Logf("%s log:\n%s", args[0], log.Bytes())
		}
	})
}

// startRelay runs a relay in the laptop on addr and returns its URL.
func (n *relayLAN) startRelay(addr string, args ...string) string {
	n.start(n.laptop, n.relayLog, append([]string{"relay", "--listen", addr, "--log-level", "debug"}, args...)...)
	return "http://" + addr
}

// lookup asks the relay for the closure root's narinfo and returns the
// status (0 when the relay is not answering).
func (n *relayLAN) lookup() int {
	resp, err := n.client.Get(n.relayURL + "/" + narinfo.HashOfStorePath(n.closure.Root) + ".narinfo")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// metric returns the line of the relay's /metrics that starts with name.
func (n *relayLAN) metric(name string) string {
	resp, err := n.client.Get(n.relayURL + "/metrics")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

func (n *relayLAN) waitFor(what string, limit time.Duration, cond func() bool) time.Duration {
	n.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			n.t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// realise runs `nix-store -r` of the closure's root in the laptop, into a
// new store, with the given substituters, and returns how long it took.
func (n *relayLAN) realise(substituters ...string) (time.Duration, error) {
	n.t.Helper()
	dir := n.t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.laptop,
		"nix-store", "--store", filepath.Join(dir, "store"), "-r", n.closure.Root)
	cmd.Env = append(nixtest.Env(
		"substituters = "+strings.Join(substituters, " "),
		"trusted-public-keys = "+n.cache.PublicKey,
		"require-sigs = true",
	), "XDG_CACHE_HOME="+filepath.Join(dir, "xdg-cache"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("nix-store -r: %w\n%s", err, out)
	}
	nixtest.VerifyCopy(n.t, filepath.Join(dir, "store"), n.closure)
	return d, nil
}

// dropLAN makes the cache's namespace drop every packet from the laptop,
// as a network that silently drops does; the rule goes with the namespace.
func (n *relayLAN) dropLAN() {
	netnstest.Run(n.t, n.lan, "nft", "add", "table", "inet", "relaytest")
	netnstest.Run(n.t, n.lan, "nft", "add", "chain", "inet", "relaytest", "input", "{ type filter hook input priority 0; policy accept; }")
	netnstest.Run(n.t, n.lan, "nft", "add", "rule", "inet", "relaytest", "input", "iifname", n.lanIf, "drop")
}

func (n *relayLAN) undropLAN() {
	netnstest.Run(n.t, n.lan, "nft", "delete", "table", "inet", "relaytest")
}

// TestRelayLeavesAndRejoinsLAN drives the relay with the real Nix client
// over a real network: on the LAN it forwards; with the cache's link down,
// and again with its packets dropped, Nix gets the closure from its next
// substituter without waiting for the cache; back on the LAN the relay
// forwards again within seconds.
func TestRelayLeavesAndRejoinsLAN(t *testing.T) {
	n := newRelayLAN(t, 1<<20)

	// On the LAN: the relay alone is enough.
	if _, err := n.realise(n.relayURL); err != nil {
		t.Fatal(err)
	}
	if m := n.metric(`nix_cache_proxy_relay_requests_total{answer="forwarded",kind="nar"}`); strings.HasSuffix(m, " 0") || m == "" {
		t.Errorf("no NAR forwarded on the LAN: %q", m)
	}

	for _, leave := range []struct {
		name          string
		leave, rejoin func()
	}{
		{"link down", func() { netnstest.Run(t, n.lan, "ip", "link", "set", n.lanIf, "down") },
			func() { netnstest.Run(t, n.lan, "ip", "link", "set", n.lanIf, "up") }},
		{"packets dropped", n.dropLAN, n.undropLAN},
	} {
		leave.leave()
		d, err := n.realise(n.relayURL, n.upstreamURL)
		if err != nil {
			t.Fatalf("%s: %v", leave.name, err)
		}
		t.Logf("%s: nix-store -r through [relay, upstream] took %v", leave.name, d)
		// The connect timeout (1 s) once, plus Nix's own work.
		if d > 20*time.Second {
			t.Errorf("%s: nix-store -r took %v: Nix waited for the cache", leave.name, d)
		}
		if n.lookup() != http.StatusNotFound {
			t.Errorf("%s: narinfo not answered 404", leave.name)
		}
		leave.rejoin()
		back := n.waitFor("the relay to forward again", 10*time.Second, func() bool { return n.lookup() == http.StatusOK })
		t.Logf("%s: rejoined; first lookup forwarded after %v", leave.name, back)
		if back > 5*time.Second {
			t.Errorf("%s: first lookup forwarded %v after rejoining, want within 5 s", leave.name, back)
		}
	}
	if m := n.metric(`nix_cache_proxy_relay_requests_total{answer="self",kind="narinfo"}`); strings.HasSuffix(m, " 0") || m == "" {
		t.Errorf("no narinfo answered by the relay itself off the LAN: %q", m)
	}
	// The laptop's side of the veth lost its carrier and got it back:
	// the kernel told the relay.
	if m := n.metric("nix_cache_proxy_relay_network_changes_total"); strings.HasSuffix(m, " 0") || m == "" {
		t.Errorf("no network change told: %q", m)
	}
	log := string(n.relayLog.Bytes())
	for _, want := range []string{"LAN cache unreachable", "LAN cache reachable, forwarding", "answered itself"} {
		if !strings.Contains(log, want) {
			t.Errorf("relay log lacks %q", want)
		}
	}
}

// TestRelayDiscoversCache: a cache that advertises itself over DNS-SD
// (serve --advertise-mdns) is found by a relay given no --cache, across
// the veth pair, and real Nix gets the closure through it; a relay given
// another key refuses it.
func TestRelayDiscoversCache(t *testing.T) {
	n := newLANPair(t, 1<<20)
	// Multicast leaves by the veth, as by a LAN's interface.
	netnstest.Run(t, n.lan, "ip", "route", "add", "224.0.0.0/4", "dev", n.lanIf)
	netnstest.Run(t, n.laptop, "ip", "route", "add", "224.0.0.0/4", "dev", "veth-b")
	upstream, _ := nixtest.ServeDirOn(t, netnstest.Listen(t, n.lan, "127.0.0.1:0"), n.cache.Dir)
	var serveLog lockedBuffer
	n.start(n.lan, &serveLog, "serve", "--advertise-mdns", "--listen", relayLANCacheAddr+":5575",
		"--cache-dir", t.TempDir(), "--upstream", upstream, "--trusted-public-key", n.cache.PublicKey)
	n.relayURL = n.startRelay("127.0.0.1:5576", "--discover", "--discover-interval", "1s", "--trusted-public-key", n.cache.PublicKey)
	d := n.waitFor("the relay to discover the cache and forward", 20*time.Second, func() bool { return n.lookup() == http.StatusOK })
	t.Logf("forwarding %v after start", d)
	if _, err := n.realise(n.relayURL); err != nil {
		t.Fatal(err)
	}

	var rogueLog lockedBuffer
	n.start(n.laptop, &rogueLog, "relay", "--listen", "127.0.0.1:5577", "--discover", "--discover-interval", "1s", "--trusted-public-key", "other-1:"+strings.Repeat("A", 43)+"=")
	n.waitFor("the other relay to refuse the cache", 20*time.Second, func() bool {
		return strings.Contains(string(rogueLog.Bytes()), "discovered cache refused")
	})
	resp, err := n.client.Get("http://127.0.0.1:5577/" + narinfo.HashOfStorePath(n.closure.Root) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("relay with another key: %d, want 404 (the cache refused)", resp.StatusCode)
	}
}

// TestRelayCacheDiesMidNAR: the cache's link goes down while Nix fetches
// the image through the relay (the veth slowed so the fetch takes
// seconds). Nix gets an error, not a short file: it moves on to its next
// substituter and the closure it gets is whole.
func TestRelayCacheDiesMidNAR(t *testing.T) {
	n := newRelayLAN(t, 16<<20)
	// 40 Mbit/s from the cache: the 16 MiB image takes about 3.5 s.
	netnstest.Run(t, n.lan, "tc", "qdisc", "add", "dev", n.lanIf, "root", "tbf", "rate", "40mbit", "burst", "32kbit", "latency", "400ms")
	forwarded := func() float64 {
		var v float64
		fmt.Sscan(strings.TrimPrefix(n.metric("nix_cache_proxy_relay_forwarded_bytes_total"), "nix_cache_proxy_relay_forwarded_bytes_total "), &v)
		return v
	}
	before := forwarded()
	done := make(chan error, 1)
	go func() {
		_, err := n.realise(n.relayURL, n.upstreamURL)
		done <- err
	}()
	n.waitFor("a few MiB of the image forwarded", 60*time.Second, func() bool { return forwarded()-before > 4<<20 })
	netnstest.Run(t, n.lan, "ip", "link", "set", n.lanIf, "down")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := n.metric(`nix_cache_proxy_relay_requests_total{answer="broken",kind="nar"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("the cut NAR was not counted as broken: %q", m)
	}
}
