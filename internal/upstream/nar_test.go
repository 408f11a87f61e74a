package upstream

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNARStreamsRawBytes(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("nix-archive-1 contents"))
	_ = zw.Close()
	tests := []struct {
		name     string
		encoding string
		body     []byte
		chunked  bool
		wantSize int64
	}{
		{"content-length", "", []byte("xz bytes"), false, 8},
		{"chunked", "", []byte("xz bytes"), true, -1},
		// Some servers add Content-Encoding regardless; the proxy must
		// still get the exact stored bytes.
		{"gzip encoding", "gzip", gz.Bytes(), false, int64(gz.Len())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newUpstream(t, func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					if ae := r.Header.Get("Accept-Encoding"); ae != "" {
						t.Errorf("Accept-Encoding sent: %q", ae)
					}
					if tt.encoding != "" {
						w.Header().Set("Content-Encoding", tt.encoding)
					}
					if tt.chunked {
						w.(http.Flusher).Flush()
					}
					_, _ = w.Write(tt.body)
				}
			})
			c := newClient(t, srv.URL, Options{})
			body, size, err := c.NAR(t.Context(), mustResolve(t, c, "nar/x.nar.xz"))
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.body) || size != tt.wantSize {
				t.Errorf("got %q (size %d), want %q (size %d)", got, size, tt.body, tt.wantSize)
			}
		})
	}
}

func TestNARBrokenTransfer(t *testing.T) {
	tests := []struct {
		name string
		h    func(done <-chan struct{}) http.HandlerFunc
		want string
	}{
		{"truncated", func(<-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				conn, buf, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
				_ = buf.Flush()
			}
		}, "unexpected EOF"},
		{"stalled", func(done <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				_, _ = w.Write([]byte("only ten b"))
				w.(http.Flusher).Flush()
				hang(r, done)
			}
		}, "stalled: no data for 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newUpstream(t, tt.h)
			// Timeout is long so only the stall timer can end the stall.
			c := newClient(t, srv.URL, Options{Timeout: 10 * time.Second, StallTimeout: 200 * time.Millisecond})
			body, size, err := c.NAR(t.Context(), mustResolve(t, c, "nar/x.nar"))
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			if size != 100 {
				t.Errorf("size = %d, want 100", size)
			}
			within(t, 2*time.Second, func() {
				got, err := io.ReadAll(body)
				checkErr(t, err, ErrUnavailable, tt.want, srv.URL)
				if string(got) != "only ten b" {
					t.Errorf("read %q before the error", got)
				}
			})
		})
	}
}

func TestNARSlowButMoving(t *testing.T) {
	srv := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			// 6 chunks 100ms apart: longer than the stall timeout in
			// total, never in one gap.
			for range 6 {
				_, _ = w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	c := newClient(t, srv.URL, Options{Timeout: 250 * time.Millisecond, StallTimeout: 300 * time.Millisecond})
	body, _, err := c.NAR(t.Context(), mustResolve(t, c, "nar/x.nar"))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil || string(got) != "xxxxxx" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func TestNARHeaderTimeout(t *testing.T) {
	srv := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { hang(r, done) }
	})
	c := newClient(t, srv.URL, Options{Timeout: 200 * time.Millisecond})
	within(t, 2*time.Second, func() {
		body, _, err := c.NAR(t.Context(), mustResolve(t, c, "nar/x.nar"))
		checkErr(t, err, ErrUnavailable, "timeout after 200ms")
		if body != nil {
			t.Error("body returned with error")
		}
	})
}

func TestNARCallerCancel(t *testing.T) {
	srv := newUpstream(t, func(done <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("start"))
			w.(http.Flusher).Flush()
			hang(r, done)
		}
	})
	c := newClient(t, srv.URL, Options{StallTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	body, _, err := c.NAR(ctx, mustResolve(t, c, "nar/x.nar"))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	within(t, 2*time.Second, func() {
		_, err := io.ReadAll(body)
		checkErr(t, err, context.Canceled)
		if errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "stalled") {
			t.Errorf("caller's cancellation reported as outage: %v", err)
		}
	})
}
