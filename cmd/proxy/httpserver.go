package main

import (
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/connlimit"
)

// clientLimits bound what one client, or many, can hold on the main
// listener. serve takes them from flags; tests shrink them.
type clientLimits struct {
	// readHeader bounds reading a request's headers: a slow-loris client
	// trickling them is cut after it.
	readHeader time.Duration
	// idle bounds a keep-alive connection waiting for its next request.
	idle time.Duration
	// maxHeaderBytes bounds a request's headers; beyond it the answer is
	// 431. Nix sends a few hundred bytes.
	maxHeaderBytes int
	// maxConns bounds the connections open at once (0: no bound).
	maxConns int
	// writeStall bounds a write that makes no progress (0: no bound).
	// There is no WriteTimeout: it bounds a whole response, and a 2 GB NAR
	// to a slow LAN client takes as long as it takes.
	writeStall time.Duration
}

// clientLimitsOf returns serve's limits: fixed bounds no Nix client comes
// near, and the flags'.
func clientLimitsOf(cfg *serveConfig) clientLimits {
	return clientLimits{
		readHeader:     10 * time.Second,
		idle:           2 * time.Minute,
		maxHeaderBytes: 64 << 10,
		maxConns:       cfg.maxConnections,
		writeStall:     cfg.writeStallTimeout,
	}
}

// fdReserve is the file descriptors kept for the cache itself (index, NAR
// files being served and written, upstream connections) when the
// connection bound is fitted under the process's limit.
const fdReserve = 256

// fitConns lowers maxConns below the open-file limit nofile (0: unknown),
// so clients alone cannot exhaust the descriptors the cache needs.
func fitConns(maxConns int, nofile uint64) (int, bool) {
	if nofile == 0 || maxConns <= 0 {
		return maxConns, false
	}
	room := int(min(nofile, 1<<30)) - fdReserve
	if room < int(nofile/2) {
		room = int(nofile / 2)
	}
	if maxConns <= room {
		return maxConns, false
	}
	return room, true
}

// newHTTPServer returns the main listener's server for h, and ln wrapped
// with the connection bounds of l.
func newHTTPServer(h http.Handler, ln net.Listener, l clientLimits, log *slog.Logger) (*http.Server, *connlimit.Listener) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.readHeader,
		IdleTimeout:       l.idle,
		MaxHeaderBytes:    l.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return srv, connlimit.Wrap(ln, connlimit.Options{Max: l.maxConns, WriteStall: l.writeStall})
}
