package discovery

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/netnstest"
)

// TestAdvertiseBrowseOverVeth: a cache advertised in one network
// namespace is found from another across a veth pair, by multicast.
func TestAdvertiseBrowseOverVeth(t *testing.T) {
	netnstest.Require(t)
	lan, laptop := netnstest.New(t), netnstest.New(t)
	ifLAN, ifLaptop := netnstest.Veth(t, lan, laptop, "10.231.3.1/30", "10.231.3.2/30")
	// Multicast goes out of the veth, as out of a LAN's interface.
	netnstest.Run(t, lan, "ip", "route", "add", "224.0.0.0/4", "dev", ifLAN)
	netnstest.Run(t, laptop, "ip", "route", "add", "224.0.0.0/4", "dev", ifLaptop)
	keys := []string{"cache.lan-1:" + "QUJD" + "RA==", "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="}
	var adv *Advertiser
	if err := netnstest.Do(lan, func() (err error) {
		adv, err = Advertise(Advertisement{Instance: "cache", Port: 5575, Path: "/", Keys: keys})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	want := []Cache{{Instance: "cache._nix-cache._tcp.local.", URL: "http://10.231.3.1:5575", Keys: keys}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []Cache
		err := netnstest.Do(laptop, func() (err error) {
			found, err = Browse(context.Background(), BrowseOptions{Timeout: 500 * time.Millisecond})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, found); diff == "" {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("browse (-want +got)\n%s", diff)
		}
	}
}

// TestLANAddrs lists no loopback address.
func TestLANAddrs(t *testing.T) {
	ips, err := LANAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		if ip.IsLoopback() {
			t.Errorf("loopback address %v listed", ip)
		}
	}
	_ = net.IPv4zero
}
