package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/connlimit"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hostile is the main listener's http.Server as serve builds it, over a
// handler with the response shapes that matter: a small answer, a file
// served by http.ServeContent (sendfile, as NAR hits are) and a body
// written in pieces (as NAR downloads stream to their followers).
type hostile struct {
	addr     string
	ln       *connlimit.Listener
	file     []byte
	finished chan error // one per /file or /stream response, when its handler returns
}

func startHostile(t *testing.T, l clientLimits, fileSize int) *hostile {
	t.Helper()
	h := &hostile{file: make([]byte, fileSize), finished: make(chan error, 16)}
	rand.Read(h.file)
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, h.file, 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			h.finished <- err
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "file", time.Time{}, f)
		h.finished <- r.Context().Err()
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(h.file)))
		var err error
		for b := h.file; len(b) > 0 && err == nil; b = b[min(len(b), 32<<10):] {
			_, err = w.Write(b[:min(len(b), 32<<10)])
		}
		h.finished <- err
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, bounded := newHTTPServer(mux, ln, l, slog.New(slog.DiscardHandler))
	go srv.Serve(bounded)
	t.Cleanup(func() { srv.Close() })
	h.addr, h.ln = ln.Addr().String(), bounded
	return h
}

func (h *hostile) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends a plain request on a new connection and returns its status.
func (h *hostile) get(t *testing.T, path string) int {
	t.Helper()
	c := h.dial(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// closedWithin reads c until the server closes it and fails t unless that
// happens within bound.
func closedWithin(t *testing.T, c net.Conn, bound time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(bound))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", bound)
	}
	t.Logf("server closed the connection after %v (err %v)", time.Since(start).Round(time.Millisecond), err)
}

func TestSlowLorisIsCut(t *testing.T) {
	h := startHostile(t, clientLimits{readHeader: 300 * time.Millisecond, idle: time.Minute}, 1)
	c := h.dial(t)
	// Trickle a never-ending header, a byte every 20ms, until cut.
	go func() {
		io.WriteString(c, "GET /small HTTP/1.1\r\nHost: cache\r\n")
		for {
			if _, err := io.WriteString(c, "X"); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	closedWithin(t, c, 5*time.Second)
	if got := h.get(t, "/small"); got != http.StatusOK {
		t.Errorf("legit request after the slow loris: %d", got)
	}
}

func TestIdleKeepAliveIsCut(t *testing.T) {
	h := startHostile(t, clientLimits{readHeader: time.Minute, idle: 300 * time.Millisecond}, 1)
	c := h.dial(t)
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: cache\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedWithin(t, c, 5*time.Second)
}

func TestOversizedHeaders(t *testing.T) {
	h := startHostile(t, clientLimits{readHeader: 5 * time.Second, idle: time.Minute, maxHeaderBytes: 64 << 10}, 1)
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"one 200 KiB header", "X-Big: " + strings.Repeat("a", 200<<10) + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"4 MiB of headers", "X-Big: " + strings.Repeat("a", 4<<20) + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"10000 small headers", strings.Repeat("X-Many: 0123456789\r\n", 10000), http.StatusRequestHeaderFieldsTooLarge},
		{"a 300 KiB URL", "", http.StatusRequestHeaderFieldsTooLarge},
		{"what Nix sends", "User-Agent: curl/8.4.0 Nix/2.18.1\r\nAccept: */*\r\n" + strings.Repeat("X-Pad: x\r\n", 100), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			target := "/small"
			if tt.header == "" {
				target += "?" + strings.Repeat("q", 300<<10)
			}
			// Write in the background: the server may answer and close
			// before reading all of a huge request.
			go io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: cache\r\n"+tt.header+"\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestStalledReaderIsCut requests a body much larger than the socket
// buffers and reads none of it: the server must give up on the write
// within the stall bound, on the sendfile path and on the write path.
func TestStalledReaderIsCut(t *testing.T) {
	const stall = 300 * time.Millisecond
	h := startHostile(t, clientLimits{readHeader: time.Minute, idle: time.Minute, writeStall: stall}, 64<<20)
	for _, path := range []string{"/file", "/stream"} {
		t.Run(path, func(t *testing.T) {
			c := h.dial(t)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: cache\r\n\r\n", path)
			select {
			case <-h.finished:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler still writes to a client that reads nothing")
			}
			// The server closed its side; the client may still drain what
			// the kernel buffered, then sees the end.
			closedWithin(t, c, 10*time.Second)
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.ln.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.ln.Open(); n != 0 {
		t.Errorf("%d connections still open on the server", n)
	}
}

// TestSlowReaderCompletes reads an 8 MiB body at about 5 MiB/s, taking
// several times the stall bound in all but never stalling: it must get
// every byte, so a slow LAN client's 2 GB download is never cut.
func TestSlowReaderCompletes(t *testing.T) {
	const stall = time.Second
	h := startHostile(t, clientLimits{readHeader: time.Minute, idle: time.Minute, writeStall: stall}, 8<<20)
	for _, path := range []string{"/file", "/stream"} {
		t.Run(path, func(t *testing.T) {
			c := h.dial(t)
			c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			start := time.Now()
			var got bytes.Buffer
			for {
				n, err := io.CopyN(&got, resp.Body, 256<<10)
				if err == io.EOF || (err == nil && n == 0) {
					break
				}
				if err != nil {
					t.Fatalf("after %d bytes: %v", got.Len(), err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			took := time.Since(start)
			if !bytes.Equal(got.Bytes(), h.file) {
				t.Fatalf("got %d bytes, not the file's %d", got.Len(), len(h.file))
			}
			if took < 2*stall {
				t.Logf("took only %v: the client was not slow enough to prove much", took)
			}
			t.Logf("%d bytes in %v with a %v stall bound", got.Len(), took.Round(time.Millisecond), stall)
			if err := <-h.finished; err != nil {
				t.Errorf("handler: %v", err)
			}
		})
	}
}

// TestConnectionBound opens many more connections than the bound: the
// server holds at most the bound, answers a legit request once they go,
// and is back to the descriptors it started with.
func TestConnectionBound(t *testing.T) {
	const max, attackers = 8, 300
	h := startHostile(t, clientLimits{readHeader: time.Minute, idle: time.Minute, maxConns: max}, 1)
	before := openFDs(t)
	var conns []net.Conn
	for range attackers {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server accept all it will
	if n := h.ln.Open(); n != max {
		t.Errorf("server holds %d connections, want the bound %d", n, max)
	}
	reg := prometheus.NewRegistry()
	metrics.RegisterConnections(reg, h.ln.Open, max)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP nix_cache_proxy_http_connections_max The bound on client connections (--max-connections); 0 for none.
# TYPE nix_cache_proxy_http_connections_max gauge
nix_cache_proxy_http_connections_max 8
# HELP nix_cache_proxy_http_connections_open Client connections open on the main listener.
# TYPE nix_cache_proxy_http_connections_open gauge
nix_cache_proxy_http_connections_open 8
`)); err != nil {
		t.Errorf("connection gauges: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	if got := h.get(t, "/small"); got != http.StatusOK {
		t.Errorf("legit request after the flood: %d", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for (h.ln.Open() != 0 || openFDs(t) > before+2) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := h.ln.Open(); n != 0 {
		t.Errorf("%d connections still open on the server", n)
	}
	if after := openFDs(t); after > before+2 {
		t.Errorf("%d file descriptors open, %d before the flood: leaked", after, before)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	dir := "/proc/self/fd"
	if _, err := os.Stat(dir); err != nil {
		dir = "/dev/fd" // darwin
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(entries)
}

func TestFitConns(t *testing.T) {
	tests := []struct {
		max     int
		nofile  uint64
		want    int
		lowered bool
	}{
		{4096, 1 << 20, 4096, false},
		{4096, 0, 4096, false},
		{0, 1024, 0, false},
		{4096, 1024, 768, true},
		{4096, 300, 150, true},
		{100, 1024, 100, false},
	}
	for _, tt := range tests {
		got, lowered := fitConns(tt.max, tt.nofile)
		if got != tt.want || lowered != tt.lowered {
			t.Errorf("fitConns(%d, %d) = %d, %v; want %d, %v", tt.max, tt.nofile, got, lowered, tt.want, tt.lowered)
		}
	}
}
