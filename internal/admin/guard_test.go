package admin_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/admin"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// guardCase is one request sent over real TCP from 127.0.0.1 to the
// server, so the peer really is loopback and only the request itself
// decides.
type guardCase struct {
	name         string
	method, path string
	host         string // Host header; "" keeps the dialed 127.0.0.1:port
	header       map[string]string
	body         string
	want         int
}

// TestGuardRefusesAttacks sends what a web page, a DNS-rebound page and a
// same-host reverse proxy can make reach the admin API from loopback: each
// must be refused with a JSON error and change nothing.
func TestGuardRefusesAttacks(t *testing.T) {
	e := newEnvOpts(t, admin.HandlerOptions{Hosts: []string{"cachebox"}})
	it := e.Upstream.Add(fakeupstream.Path{Name: "target", File: fakeupstream.RandomBytes(100)})
	pins := `{"paths": ["` + it.StorePath + `"]}`
	with := func(kv ...string) map[string]string {
		m := map[string]string{"Content-Type": "application/json"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []guardCase{
		// CSRF: what an HTML form or a no-preflight fetch can send.
		{"pin as text/plain", "POST", "/_/pins", "", map[string]string{"Content-Type": "text/plain"}, pins, http.StatusUnsupportedMediaType},
		{"pin as a form", "POST", "/_/pins", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, pins, http.StatusUnsupportedMediaType},
		{"pin as multipart", "POST", "/_/pins", "", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, pins, http.StatusUnsupportedMediaType},
		{"pin without Content-Type", "POST", "/_/pins", "", nil, pins, http.StatusUnsupportedMediaType},
		{"pin as application/jsonp", "POST", "/_/pins", "", map[string]string{"Content-Type": "application/jsonx"}, pins, http.StatusUnsupportedMediaType},
		{"unpin as text/plain", "DELETE", "/_/pins", "", map[string]string{"Content-Type": "text/plain"}, pins, http.StatusUnsupportedMediaType},
		{"prefetch as text/plain", "POST", "/_/prefetch", "", map[string]string{"Content-Type": "text/plain"}, pins, http.StatusUnsupportedMediaType},
		{"check as text/plain", "POST", "/_/check", "", map[string]string{"Content-Type": "text/plain"}, pins, http.StatusUnsupportedMediaType},
		{"pin cross-site (Sec-Fetch-Site)", "POST", "/_/pins", "", with("Sec-Fetch-Site", "cross-site"), pins, http.StatusForbidden},
		{"pin from another origin (Origin)", "POST", "/_/pins", "", with("Origin", "http://evil.example"), pins, http.StatusForbidden},
		// DNS rebinding: same-origin for the browser, but Host names the attacker.
		{"read misses, rebound Host", "GET", "/_/misses", "evil.example:5575", nil, "", http.StatusForbidden},
		{"pin, rebound Host", "POST", "/_/pins", "evil.example:5575", with("Origin", "http://evil.example:5575", "Sec-Fetch-Site", "same-origin"), pins, http.StatusForbidden},
		{"Host a loopback-looking name", "GET", "/_/pins", "127.0.0.1.evil.example", nil, "", http.StatusForbidden},
		{"Host localhost subdomain trick", "GET", "/_/pins", "localhost.evil.example", nil, "", http.StatusForbidden},
		{"Host a LAN address", "GET", "/_/pins", "192.168.1.10:5575", nil, "", http.StatusForbidden},
		// A reverse proxy on this host relays LAN clients from loopback.
		{"pin via proxy (X-Forwarded-For)", "POST", "/_/pins", "", with("X-Forwarded-For", "192.0.2.7"), pins, http.StatusForbidden},
		{"pin via proxy (Forwarded)", "POST", "/_/pins", "", with("Forwarded", "for=192.0.2.7"), pins, http.StatusForbidden},
		{"pin via proxy (X-Real-IP)", "POST", "/_/pins", "", with("X-Real-IP", "192.0.2.7"), pins, http.StatusForbidden},
		{"read via proxy (X-Forwarded-Host)", "GET", "/_/pins", "", map[string]string{"X-Forwarded-Host": "cache.lan"}, "", http.StatusForbidden},
		{"read via proxy claiming loopback", "GET", "/_/misses", "", map[string]string{"X-Forwarded-For": "127.0.0.1"}, "", http.StatusForbidden},
		{"prefetch via proxy", "POST", "/_/prefetch", "", with("X-Forwarded-For", "192.0.2.7"), pins, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := send(t, e.srv.URL, tt)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			assertJSONError(t, body)
		})
	}
	// Nothing changed: no pin, no job, the upstream never asked.
	got, err := e.client.Pins(context.Background())
	if err != nil || len(got) != 0 {
		t.Errorf("pins after the attacks: %v, %v", got, err)
	}
	if jobs := e.Prefetch.List(); len(jobs) != 0 {
		t.Errorf("attacks started jobs: %+v", jobs)
	}
	if n := e.Upstream.Total(); n != 0 {
		t.Errorf("attacks reached the upstream %d times", n)
	}
}

// TestGuardLetsLocalClientsIn checks what the CLI and a local operator send
// still works: loopback Host names, localhost, the configured listen name,
// JSON with parameters; and with a token, a proxied LAN client.
func TestGuardLetsLocalClientsIn(t *testing.T) {
	e := newEnvOpts(t, admin.HandlerOptions{Hosts: []string{"CacheBox"}})
	port := e.srv.Listener.Addr().String()
	port = port[strings.LastIndexByte(port, ':')+1:]
	tests := []guardCase{
		{"dialed address", "GET", "/_/pins", "", nil, "", http.StatusOK},
		{"localhost", "GET", "/_/pins", "localhost:" + port, nil, "", http.StatusOK},
		{"localhost, no port", "GET", "/_/pins", "localhost", nil, "", http.StatusOK},
		{"IPv6 loopback", "GET", "/_/pins", "[::1]:" + port, nil, "", http.StatusOK},
		{"other loopback address", "GET", "/_/pins", "127.0.1.1:" + port, nil, "", http.StatusOK},
		{"listen name, any case", "GET", "/_/pins", "cachebox:" + port, nil, "", http.StatusOK},
		{"JSON with charset", "POST", "/_/check", "", map[string]string{"Content-Type": "application/json; charset=utf-8"}, `{"paths": ["` + fakeupstream.RandomHash() + `"]}`, http.StatusOK},
		{"same-origin browser write", "POST", "/_/check", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}, `{"paths": ["` + fakeupstream.RandomHash() + `"]}`, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := send(t, e.srv.URL, tt)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
		})
	}

	// The CLI's client pins and unpins.
	it := e.Upstream.Add(fakeupstream.Path{Name: "legit", File: fakeupstream.RandomBytes(100)})
	st, err := e.client.Pin(context.Background(), []string{it.StorePath})
	if err != nil {
		t.Fatalf("client Pin: %v", err)
	}
	e.waitJob(t, st.ID)
	if err := e.client.Unpin(context.Background(), []string{it.StorePath}); err != nil {
		t.Fatalf("client Unpin: %v", err)
	}

	// With a token, the token decides: a LAN client relayed by a proxy,
	// under the proxy's public name, is let in; without it, refused.
	const token = "s3cret"
	te := newEnvOpts(t, admin.HandlerOptions{Token: token})
	proxied := guardCase{"proxied with token", "POST", "/_/check", "cache.lan",
		map[string]string{"Content-Type": "application/json", "X-Forwarded-For": "192.0.2.7", "Authorization": "Bearer " + token},
		`{"paths": ["` + fakeupstream.RandomHash() + `"]}`, http.StatusOK}
	if resp, body := send(t, te.srv.URL, proxied); resp.StatusCode != http.StatusOK {
		t.Errorf("%s: %d %s", proxied.name, resp.StatusCode, body)
	}
	proxied.header["Content-Type"] = "text/plain"
	if resp, body := send(t, te.srv.URL, proxied); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain with token: %d %s, want 415", resp.StatusCode, body)
	}
}

func send(t *testing.T, base string, tt guardCase) (*http.Response, []byte) {
	t.Helper()
	u, err := url.Parse(base + tt.path)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(tt.method, u.String(), strings.NewReader(tt.body))
	if err != nil {
		t.Fatal(err)
	}
	if tt.host != "" {
		req.Host = tt.host
	}
	for k, v := range tt.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestSlowBodyIsCut trickles a request body, the slow loris past the
// headers: the server answers 408 and closes within the body timeout, and
// a refused request's unread body is not waited for either.
func TestSlowBodyIsCut(t *testing.T) {
	e := newEnvOpts(t, admin.HandlerOptions{BodyTimeout: 300 * time.Millisecond})
	it := e.Upstream.Add(fakeupstream.Path{Name: "slow", File: fakeupstream.RandomBytes(100)})
	body := `{"paths": ["` + it.StorePath + `"]}`
	for _, tt := range []struct {
		name, host string
		want       int
	}{
		{"accepted request", "127.0.0.1", http.StatusRequestTimeout},
		{"refused request", "evil.example", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /_/pins HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", tt.host, len(body))
			go func() {
				for i := 0; i < len(body); i++ {
					if _, err := c.Write([]byte{body[i]}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			start := time.Now()
			c.SetReadDeadline(start.Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			b, _ := io.ReadAll(resp.Body)
			assertJSONError(t, b)
			// The server hangs up rather than wait for the rest. A reset
			// is a hang-up too: the trickle's next byte reaching a socket
			// the server closed with unread body makes the kernel send RST.
			if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("connection not closed within 5s: %v", err)
			}
			t.Logf("answered %d and closed after %v", resp.StatusCode, time.Since(start).Round(time.Millisecond))
		})
	}
	if pins, err := e.client.Pins(context.Background()); err != nil || len(pins) != 0 {
		t.Errorf("pins after slow bodies: %v, %v", pins, err)
	}
}
