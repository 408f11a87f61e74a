package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
)

// check validates cfg as far as that is possible without the network or
// the cache dir, and reads the files it names (--admin-token-file,
// --netrc-file). serve, the admin commands and check-config all run it,
// so check-config accepts exactly what serve accepts: a new flag's
// validation belongs here (or in a constructor check calls), not in serve.
func (cfg *serveConfig) check() error {
	for _, a := range []struct{ flag, addr string }{
		{"--listen", cfg.listen}, {"--metrics-listen", cfg.metricsListen}, {"--pprof-listen", cfg.pprofListen},
	} {
		if a.addr == "" && a.flag != "--listen" {
			continue
		}
		if err := checkListenAddr(a.addr); err != nil {
			return fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
	}
	if _, err := newLogger(io.Discard, cfg.logLevel, cfg.logFormat); err != nil {
		return err
	}
	g, err := newUpstreams(cfg, nil, nil)
	if err != nil {
		return err
	}
	g.Close() // only its construction was checked; stop its probes
	keys, err := parseKeys(cfg)
	if err != nil {
		return err
	}
	if cfg.verifySignatures && len(keys) == 0 {
		return errors.New("--trusted-public-key: none given while --verify-signatures is on (every upstream narinfo would be refused)")
	}
	for _, p := range cfg.pins.values {
		if _, err := prefetch.HashOf(p); err != nil {
			return fmt.Errorf("--pin: %w", err)
		}
	}
	cfg.keepRules = nil
	for _, r := range cfg.keepLatest.values {
		rule, err := evict.ParseRule(r)
		if err != nil {
			return fmt.Errorf("--keep-latest: %w", err)
		}
		cfg.keepRules = append(cfg.keepRules, rule)
	}
	if err := server.CheckUpstreamErrorStatus(cfg.upstreamErrorStatus); err != nil {
		return fmt.Errorf("--upstream-error-status: %w", err)
	}
	if cfg.cacheDir == "" {
		return errors.New("--cache-dir: empty")
	}
	if cfg.storage != "" {
		if _, err := s3store.ParseURL(cfg.storage); err != nil {
			return fmt.Errorf("--storage: %w", err)
		}
		if cfg.advertiseURL != "" {
			if u, err := url.Parse(cfg.advertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("--advertise-url %q: want http://HOST:PORT", cfg.advertiseURL)
			}
		}
		if cfg.fillLeaseTTL < time.Second {
			return errors.New("--fill-lease-ttl: at least 1s")
		}
		if err := checkFleetEviction(cfg); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--negative-ttl", cfg.negativeTTL}, {"--upstream-timeout", cfg.upstreamTimeout},
		{"--shutdown-timeout", cfg.shutdownTimeout}, {"--miss-recheck", cfg.missRecheck}, {"--miss-recheck-max", cfg.missRecheckMax},
		{"--write-stall-timeout", cfg.writeStallTimeout}, {"--prune-after", cfg.pruneAfter},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %s: negative", d.flag, d.v)
		}
	}
	for _, n := range []struct {
		flag string
		v    int64
	}{
		{"--priority", int64(cfg.priority)}, {"--miss-log-max", int64(cfg.missLogMax)},
		{"--prefetch-concurrency", int64(cfg.prefetchConcurrency)}, {"--min-free", cfg.minFree}, {"--max-size", cfg.maxSize},
		{"--max-connections", int64(cfg.maxConnections)},
	} {
		if n.v < 0 {
			return fmt.Errorf("%s %d: negative", n.flag, n.v)
		}
	}
	if cfg.fetchConnections < 1 || cfg.fetchConnections > 64 {
		return fmt.Errorf("--fetch-connections %d: must be 1 to 64", cfg.fetchConnections)
	}
	switch cfg.recompress {
	case "auto", "off":
	case "zstd":
		// The original is deleted after its grace, outside the fleet
		// eviction's marks: other proxies on the bucket may serve it.
		if cfg.storage != "" {
			return errors.New("--recompress zstd: not supported with --storage s3:// yet (dropping the original after recompressing would bypass the fleet eviction and delete a NAR other proxies serve); use auto or off")
		}
	default:
		return fmt.Errorf("--recompress %q: must be auto, zstd or off", cfg.recompress)
	}
	if cfg.uploadMaxSize <= 0 {
		return errors.New("--upload-max-size: must be positive")
	}
	if cfg.secretKeyFile != "" {
		sk, err := narinfo.LoadSecretKeyFile(cfg.secretKeyFile)
		if err != nil {
			return fmt.Errorf("--secret-key-file: %w", err)
		}
		cfg.secretKey = &sk
	}
	if cfg.advertiseMDNS {
		if host, _, _ := net.SplitHostPort(cfg.listen); host == "localhost" || net.ParseIP(host).IsLoopback() {
			return fmt.Errorf("--advertise-mdns: --listen %s is loopback, no one on the LAN could reach it", cfg.listen)
		}
	}
	if cfg.writeTokenFile != "" {
		tok, err := readToken(cfg.writeTokenFile)
		if err != nil {
			return fmt.Errorf("--write-token-file: %w", err)
		}
		if len(tok) < 16 {
			return errors.New("--write-token-file: the token must be at least 16 characters (e.g. `openssl rand -hex 32`)")
		}
		cfg.writeToken = tok
	}
	return cfg.readAdminToken()
}

// checkListenAddr accepts host:port with a numeric port, as net.Listen
// will, without resolving the host (check-config also runs in a sandbox
// with no DNS, at NixOS build time).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// readAdminToken sets the admin token from --admin-token-file: the way to
// give it without putting it in argv, the environment or a world-readable
// config file (systemd's LoadCredential, a launchd daemon's root-owned file).
func (cfg *serveConfig) readAdminToken() error {
	if cfg.adminTokenFile == "" {
		return nil
	}
	if cfg.adminToken != "" {
		return errors.New("--admin-token and --admin-token-file: give one of them")
	}
	tok, err := readToken(cfg.adminTokenFile)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	cfg.adminToken = tok
	return nil
}

// readToken reads a file holding one token on one line.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s: want one token on one line", path)
	}
	return tok, nil
}

// checkFleetEviction checks the flags of eviction from a shared bucket.
// A NAR marked there is deleted one --evict-grace later unless a proxy
// served it meanwhile, so the grace must outlast a fill (a NAR being
// filled is never deleted under its writer) and leave every proxy time to
// publish its accesses (each does every --fleet-interval).
func checkFleetEviction(cfg *serveConfig) error {
	if cfg.fleetInterval < 100*time.Millisecond {
		return fmt.Errorf("--fleet-interval %s: at least 100ms", cfg.fleetInterval)
	}
	if cfg.maxSize == 0 && len(cfg.keepRules) == 0 {
		return nil
	}
	if cfg.evictGrace <= cfg.fillLeaseTTL {
		return fmt.Errorf("--evict-grace %s: must be longer than --fill-lease-ttl %s (a NAR being filled must outlive its mark)",
			cfg.evictGrace, cfg.fillLeaseTTL)
	}
	if cfg.evictGrace < 3*cfg.fleetInterval {
		return fmt.Errorf("--evict-grace %s: must be at least 3 times --fleet-interval %s, so a proxy serving a marked NAR publishes that before it is deleted",
			cfg.evictGrace, cfg.fleetInterval)
	}
	return nil
}

// recompressOn reports whether NARs are recompressed to zstd: --recompress
// zstd, or auto on local disk (a shared bucket cannot drop the originals
// yet, see check).
func (cfg *serveConfig) recompressOn() bool {
	return cfg.recompress == "zstd" || (cfg.recompress == "auto" && cfg.storage == "")
}
