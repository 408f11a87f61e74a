package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/discovery"
)

// advertiseCache advertises the cache listening on addr over DNS-SD
// (--advertise-mdns), with the keys its narinfos may be signed with: its
// own (--secret-key-file) and the upstreams' it trusts. The addresses are
// --listen's host, or every LAN address when it listens on all.
func advertiseCache(cfg *serveConfig, addr net.Addr, log *slog.Logger) (*discovery.Advertiser, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("--advertise-mdns: listening on %v, not TCP", addr)
	}
	var ips []net.IP
	if !tcp.IP.IsUnspecified() {
		ips = []net.IP{tcp.IP}
	}
	var keys []string
	if cfg.secretKey != nil {
		keys = append(keys, cfg.secretKey.ToPublicKey().String())
	}
	keys = append(keys, cfg.keys.values...)
	adv, err := discovery.Advertise(discovery.Advertisement{Port: tcp.Port, IPs: ips, Path: "/", Keys: keys, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--advertise-mdns: %w", err)
	}
	log.Info("advertising the cache over DNS-SD", "service", discovery.Service, "port", tcp.Port, "keys", len(keys))
	return adv, nil
}
