package connlimit_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/connlimit"
)

func listen(t *testing.T, opts connlimit.Options) *connlimit.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := connlimit.Wrap(ln, opts)
	t.Cleanup(func() { l.Close() })
	return l
}

// pair returns the server and client ends of one connection through l.
func pair(t *testing.T, l *connlimit.Listener) (net.Conn, net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

// TestReadFrom checks the chunked ReadFrom sends exactly what it is given
// and keeps the caller's *io.LimitedReader accounting, as io.CopyN and
// http.ServeContent rely on.
func TestReadFrom(t *testing.T) {
	data := make([]byte, 5<<20+123)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, stall := range []time.Duration{0, time.Minute} {
		l := listen(t, connlimit.Options{WriteStall: stall})
		tests := []struct {
			name string
			src  func(*os.File) io.Reader
			want []byte
		}{
			{"limited file (sendfile)", func(f *os.File) io.Reader { return &io.LimitedReader{R: f, N: 3<<20 + 7} }, data[:3<<20+7]},
			{"whole file", func(f *os.File) io.Reader { return f }, data},
			{"plain reader", func(*os.File) io.Reader { return bytes.NewReader(data[:2<<20]) }, data[:2<<20]},
			{"limit past the end", func(f *os.File) io.Reader { return &io.LimitedReader{R: f, N: 9 << 20} }, data},
		}
		for _, tt := range tests {
			t.Run(stall.String()+"/"+tt.name, func(t *testing.T) {
				server, client := pair(t, l)
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				got := make(chan []byte)
				go func() {
					b, _ := io.ReadAll(client)
					got <- b
				}()
				src := tt.src(f)
				n, err := server.(io.ReaderFrom).ReadFrom(src)
				if err != nil || n != int64(len(tt.want)) {
					t.Errorf("ReadFrom = %d, %v; want %d, nil", n, err, len(tt.want))
				}
				if lr, ok := src.(*io.LimitedReader); ok && lr.N != max(0, 3<<20+7-n) && lr.N != 9<<20-n {
					t.Errorf("LimitedReader.N = %d after %d bytes", lr.N, n)
				}
				server.Close()
				if b := <-got; !bytes.Equal(b, tt.want) {
					t.Errorf("client got %d bytes, want %d", len(b), len(tt.want))
				}
			})
		}
	}
}

// TestAcceptWaitsForASlot checks the bound: a second Accept waits until
// the first connection closes (once, however often Close is called), and
// Close wakes an Accept waiting for a slot.
func TestAcceptWaitsForASlot(t *testing.T) {
	l := listen(t, connlimit.Options{Max: 1})
	first, _ := pair(t, l)
	if _, err := net.Dial("tcp", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	select {
	case <-accepted:
		t.Fatal("accepted beyond the bound")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close must not free a second slot
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("closing a connection did not free its slot")
	}
	if n := l.Open(); n != 1 {
		t.Errorf("Open() = %d, want 1", n)
	}

	errc := make(chan error)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake an Accept waiting for a slot")
	}
}
