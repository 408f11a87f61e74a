package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/hashicorp/mdns"
)

// Advertisement is what a server says of itself.
type Advertisement struct {
	// Instance is the service instance name (default: the host name).
	Instance string
	// Port is the port the cache serves on (required).
	Port int
	// IPs are the addresses to advertise (default: every address of the
	// interfaces that are up, not loopback, and multicast).
	IPs []net.IP
	// Path is the cache's URL path (default "/").
	Path string
	// Keys are the public keys the cache's narinfos are signed with.
	Keys []string
	// Interface, if not nil, is the one interface to answer on (default:
	// the system's multicast interface).
	Interface *net.Interface
	Logger    *slog.Logger
}

// Advertiser answers DNS-SD queries for one cache until Close.
type Advertiser struct {
	srv *mdns.Server
}

// Advertise starts answering mDNS queries for a.
func Advertise(a Advertisement) (*Advertiser, error) {
	if a.Port <= 0 {
		return nil, errors.New("discovery: no port to advertise")
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("discovery: host name: %w", err)
	}
	host, _, _ = strings.Cut(host, ".")
	if a.Instance == "" {
		a.Instance = host
	}
	if len(a.IPs) == 0 {
		if a.IPs, err = LANAddrs(); err != nil {
			return nil, err
		}
	}
	if len(a.IPs) == 0 {
		return nil, errors.New("discovery: no LAN address to advertise")
	}
	svc, err := mdns.NewMDNSService(a.Instance, Service, "", host+".local.", a.Port, a.IPs, txt(a.Path, a.Keys))
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Iface: a.Interface, Logger: stdLogger(a.Logger)})
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return &Advertiser{srv: srv}, nil
}

// Close stops answering.
func (a *Advertiser) Close() error { return a.srv.Shutdown() }

// LANAddrs returns the addresses of the interfaces that are up, not
// loopback and multicast: those a LAN client could reach.
func LANAddrs() ([]net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("discovery: interfaces: %w", err)
	}
	var ips []net.IP
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagMulticast == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	}
	return ips, nil
}
