package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

const testToken = "0123456789abcdef0123456789abcdef"

// bearer is the header pair of a write with the right token.
var bearer = []string{"Authorization", "Bearer " + testToken}

// uploadEnv is a proxy taking uploads, with one upstream it can pull
// references from and a "builder" whose paths nobody has yet: what a
// machine runs `nix copy --to` from.
type uploadEnv struct {
	*proxy
	up      *fakeupstream.Upstream
	builder *fakeupstream.Upstream
	pub     narinfo.PublicKey
}

func newUploadEnv(t *testing.T, mod func(*config)) *uploadEnv {
	t.Helper()
	up, builder := fakeupstream.New(t), fakeupstream.New(t)
	sk, pk, err := narinfo.GenerateKey("cache.lan-1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{ups: []*fakeupstream.Upstream{up}, keys: []narinfo.PublicKey{up.PublicKey()},
		writeToken: testToken, secretKey: &sk}
	if mod != nil {
		mod(&cfg)
	}
	return &uploadEnv{proxy: newProxy(t, cfg), up: up, builder: builder, pub: pk}
}

// put PUTs body to path as Nix does, with the token unless header says otherwise.
func (e *uploadEnv) put(path string, body []byte, header ...string) response {
	e.t.Helper()
	if header == nil {
		header = bearer
	}
	return e.send(http.MethodPut, path, body, header...)
}

// pushNAR and pushNarInfo upload an item the builder made.
func (e *uploadEnv) pushNAR(it *fakeupstream.Item) response {
	e.t.Helper()
	return e.put(it.NARPath, it.File)
}

func (e *uploadEnv) pushNarInfo(it *fakeupstream.Item) response {
	e.t.Helper()
	return e.put(it.NarInfoPath, it.NarInfo)
}

func wantStatus(t *testing.T, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status %d, want %d; body %q", what, r.status, want, r.body)
	}
}

func TestUploadRoundTrip(t *testing.T) {
	e := newUploadEnv(t, nil)
	dep := e.up.Add(fakeupstream.Path{Name: "glibc", File: fakeupstream.RandomBytes(3000), Compression: "none"})
	it := e.builder.Add(fakeupstream.Path{Name: "nixos.qcow2", File: fakeupstream.RandomBytes(200 << 10), Compression: "none",
		References: []string{strings.TrimPrefix(dep.StorePath, "/nix/store/")}, Unsigned: true})

	wantStatus(t, "GET narinfo before the upload", e.get(it.NarInfoPath), http.StatusNotFound)
	wantStatus(t, "HEAD NAR before the upload", e.do(http.MethodHead, it.NARPath), http.StatusNotFound)
	wantStatus(t, "PUT NAR", e.pushNAR(it), http.StatusCreated)
	wantStatus(t, "PUT narinfo", e.pushNarInfo(it), http.StatusCreated)

	r := e.get(it.NarInfoPath)
	wantStatus(t, "GET narinfo", r, http.StatusOK)
	ni, err := narinfo.Parse(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if !narinfo.SignedBy(ni, e.pub) {
		t.Fatalf("served narinfo is not signed by the proxy's key:\n%s", r.body)
	}
	got := e.get("/" + ni.URL)
	wantStatus(t, "GET NAR", got, http.StatusOK)
	if !bytes.Equal(got.body, it.File) {
		t.Fatal("NAR served back differs from the one uploaded")
	}
	// The reference was pulled through from the upstream to check it.
	wantStatus(t, "GET reference", e.get(dep.NarInfoPath), http.StatusOK)
	// A second upload of the same path changes nothing and succeeds.
	wantStatus(t, "PUT NAR again", e.pushNAR(it), http.StatusOK)
	wantStatus(t, "PUT narinfo again", e.pushNarInfo(it), http.StatusOK)
	if again := e.get(it.NarInfoPath); !bytes.Equal(again.body, r.body) {
		t.Fatal("re-upload rewrote the narinfo")
	}
}

func TestUploadAuth(t *testing.T) {
	e := newUploadEnv(t, nil)
	it := e.builder.Add(fakeupstream.Path{File: []byte("nar"), Compression: "none"})
	basic := func(user, pass string) []string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return []string{"Authorization", req.Header.Get("Authorization")}
	}
	for _, tc := range []struct {
		name   string
		header []string
		want   int
	}{
		{"no credentials", []string{"X-None", "1"}, http.StatusUnauthorized},
		{"wrong basic password", basic("nix", "wrong"), http.StatusForbidden},
		{"wrong bearer", []string{"Authorization", "Bearer " + testToken + "x"}, http.StatusForbidden},
		{"unknown scheme", []string{"Authorization", "Token " + testToken}, http.StatusUnauthorized},
		{"netrc basic, any login", basic("whoever", testToken), http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.put(it.NARPath, it.File, tc.header...)
			wantStatus(t, "PUT NAR", r, tc.want)
			if tc.want == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if ok, _ := e.store.HasNAR(t.Context(), it.FileHash+".nar"); ok != (tc.want == http.StatusCreated) {
				t.Errorf("NAR on disk: %v after status %d", ok, r.status)
			}
		})
	}
}

func TestUploadsOff(t *testing.T) {
	p := newProxy(t, config{ups: []*fakeupstream.Upstream{fakeupstream.New(t)}})
	r := p.send(http.MethodPut, "/"+fakeupstream.RandomHash()+".narinfo", []byte("x"), bearer...)
	wantStatus(t, "PUT with uploads off", r, http.StatusMethodNotAllowed)
	if r.header.Get("Allow") == "" || !strings.Contains(string(r.body), "--write-token-file") {
		t.Fatalf("405 should say Allow and how to turn uploads on: %v %q", r.header, r.body)
	}
}

func TestUploadRejections(t *testing.T) {
	e := newUploadEnv(t, func(c *config) { c.maxNARUpload = 64 << 10 })
	nar := fakeupstream.RandomBytes(4096)
	good := e.builder.Add(fakeupstream.Path{File: nar, Compression: "none", Unsigned: true})

	t.Run("NAR bytes that are not its name", func(t *testing.T) {
		other := fakeupstream.RandomBytes(4096)
		wantStatus(t, "PUT", e.put(good.NARPath, other), http.StatusBadRequest)
		if ok, _ := e.store.HasNAR(t.Context(), good.FileHash+".nar"); ok {
			t.Fatal("a NAR that does not match its name was kept")
		}
	})
	t.Run("narinfo before its NAR", func(t *testing.T) {
		r := e.pushNarInfo(good)
		wantStatus(t, "PUT narinfo", r, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "has not been uploaded") {
			t.Errorf("body %q does not say the NAR is missing", r.body)
		}
		wantStatus(t, "GET narinfo", e.get(good.NarInfoPath), http.StatusNotFound)
	})
	t.Run("NarHash that is not the NAR's", func(t *testing.T) {
		lie := e.builder.Add(fakeupstream.Path{File: nar, Compression: "none", Unsigned: true,
			NarHash: bytes.Repeat([]byte{7}, 32), NarSize: uint64(len(nar))})
		wantStatus(t, "PUT NAR", e.pushNAR(lie), http.StatusCreated)
		r := e.pushNarInfo(lie)
		wantStatus(t, "PUT narinfo", r, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "NarHash") {
			t.Errorf("body %q does not name NarHash", r.body)
		}
		wantStatus(t, "GET narinfo", e.get(lie.NarInfoPath), http.StatusNotFound)
	})
	t.Run("reference nobody has", func(t *testing.T) {
		orphan := e.builder.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), Compression: "none", Unsigned: true,
			References: []string{fakeupstream.RandomHash() + "-missing-dep"}})
		wantStatus(t, "PUT NAR", e.pushNAR(orphan), http.StatusCreated)
		r := e.pushNarInfo(orphan)
		wantStatus(t, "PUT narinfo", r, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "missing-dep") {
			t.Errorf("body %q does not name the missing reference", r.body)
		}
		wantStatus(t, "GET narinfo", e.get(orphan.NarInfoPath), http.StatusNotFound)
	})
	t.Run("StorePath of another hash", func(t *testing.T) {
		wantStatus(t, "PUT", e.put("/"+fakeupstream.RandomHash()+".narinfo", good.NarInfo), http.StatusBadRequest)
	})
	t.Run("not a narinfo", func(t *testing.T) {
		wantStatus(t, "PUT", e.put(good.NarInfoPath, []byte("<html>hello</html>")), http.StatusBadRequest)
	})
	t.Run("oversized NAR", func(t *testing.T) {
		big := e.builder.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100 << 10), Compression: "none"})
		wantStatus(t, "PUT", e.pushNAR(big), http.StatusRequestEntityTooLarge)
		if ok, _ := e.store.HasNAR(t.Context(), big.FileHash+".nar"); ok {
			t.Fatal("an oversized NAR was kept")
		}
	})
	t.Run("oversized narinfo", func(t *testing.T) {
		wantStatus(t, "PUT", e.put(good.NarInfoPath, bytes.Repeat([]byte("X: y\n"), 300<<10)), http.StatusRequestEntityTooLarge)
	})
	t.Run("compression the proxy cannot check", func(t *testing.T) {
		br := e.builder.Add(fakeupstream.Path{File: []byte("x"), Compression: "br"})
		wantStatus(t, "PUT", e.pushNAR(br), http.StatusUnsupportedMediaType)
	})
	t.Run("bad names", func(t *testing.T) {
		for _, path := range []string{"/nar/x.nar", "/nar/..%2fetc.nar", "/log/..", "/realisations/..%2fx.doi", "/foo.narinfo"} {
			wantStatus(t, "PUT "+path, e.put(path, []byte("x")), http.StatusBadRequest)
		}
	})
	if files := e.tempFiles(); len(files) != 0 {
		t.Errorf("temp files left behind: %v", files)
	}
}

func TestUploadSignaturePolicy(t *testing.T) {
	// Without a key of its own, the proxy keeps only what a trusted key
	// signed: here the upstream's key.
	e := newUploadEnv(t, func(c *config) { c.secretKey = nil })
	unsigned := e.builder.Add(fakeupstream.Path{File: []byte("unsigned nar"), Compression: "none", Unsigned: true})
	wantStatus(t, "PUT NAR", e.pushNAR(unsigned), http.StatusCreated)
	r := e.pushNarInfo(unsigned)
	wantStatus(t, "PUT unsigned narinfo", r, http.StatusForbidden)
	if !strings.Contains(string(r.body), "--secret-key-file") {
		t.Errorf("refusal %q does not say how to fix it", r.body)
	}
	sk := e.up.SecretKey()
	signed := e.builder.Add(fakeupstream.Path{File: []byte("signed nar"), Compression: "none", SignWith: &sk})
	wantStatus(t, "PUT NAR", e.pushNAR(signed), http.StatusCreated)
	wantStatus(t, "PUT signed narinfo", e.pushNarInfo(signed), http.StatusCreated)
	wantStatus(t, "GET", e.get(signed.NarInfoPath), http.StatusOK)
}

func TestUploadCompressedNarInfoAndAux(t *testing.T) {
	e := newUploadEnv(t, nil)
	it := e.builder.Add(fakeupstream.Path{File: []byte("a nar"), Compression: "none", Unsigned: true})
	wantStatus(t, "PUT NAR", e.pushNAR(it), http.StatusCreated)
	var zb bytes.Buffer
	zw, _ := zstd.NewWriter(&zb)
	zw.Write(it.NarInfo)
	zw.Close()
	wantStatus(t, "PUT zstd narinfo", e.put(it.NarInfoPath, zb.Bytes(), append([]string{"Content-Encoding", "zstd"}, bearer...)...), http.StatusCreated)
	wantStatus(t, "GET narinfo", e.get(it.NarInfoPath), http.StatusOK)

	for _, tc := range []struct{ path, body string }{
		{"/log/" + it.Hash + "-foo.drv", "build log line\n"},
		{"/" + it.Hash + ".ls", `{"version":1,"root":{"type":"regular","size":5}}`},
		{"/realisations/sha256:0123abcd!out.doi", `{"id":"sha256:0123abcd!out"}`},
		{"/build-trace-v2/" + it.Hash + "-foo.drv/out.doi", `{"outPath":"x"}`},
	} {
		wantStatus(t, "PUT "+tc.path, e.put(tc.path, []byte(tc.body)), http.StatusCreated)
		r := e.get(tc.path)
		wantStatus(t, "GET "+tc.path, r, http.StatusOK)
		if string(r.body) != tc.body {
			t.Errorf("GET %s = %q, want %q", tc.path, r.body, tc.body)
		}
	}
}

// TestUploadTruncated sends a NAR whose body stops short of its
// Content-Length and hangs up: nothing is kept.
func TestUploadTruncated(t *testing.T) {
	e := newUploadEnv(t, nil)
	it := e.builder.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(64 << 10), Compression: "none"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", it.NARPath, testToken, len(it.File))
	conn.Write(it.File[:len(it.File)/2])
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("truncated upload answered %d", resp.StatusCode)
		}
	}
	conn.Close()
	eventually(t, "the truncated upload is discarded", func() bool { return len(e.tempFiles()) == 0 })
	if ok, _ := e.store.HasNAR(t.Context(), it.FileHash+".nar"); ok {
		t.Fatal("a truncated NAR was kept")
	}
}

// TestUploadConcurrent: eight clients upload the same path at once; all
// succeed and one sound entry results.
func TestUploadConcurrent(t *testing.T) {
	e := newUploadEnv(t, nil)
	it := e.builder.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(512 << 10), Compression: "none", Unsigned: true})
	var wg sync.WaitGroup
	statuses := make(chan int, 16)
	for range 8 {
		wg.Go(func() {
			statuses <- e.pushNAR(it).status
			statuses <- e.pushNarInfo(it).status
		})
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK && s != http.StatusCreated {
			t.Errorf("concurrent upload answered %d", s)
		}
	}
	r := e.get(e.narURL(it.Hash))
	if r.status != http.StatusOK || !bytes.Equal(r.body, it.File) {
		t.Fatalf("after concurrent uploads: %d, %d bytes", r.status, len(r.body))
	}
	if st, _ := e.store.Stats(t.Context()); st.NARs != 1 || st.NARBytes != int64(len(it.File)) {
		t.Errorf("%d NAR files (%d bytes) indexed, want 1 (%d)", st.NARs, st.NARBytes, len(it.File))
	}
}

// TestUploadStalled: a client that stops sending mid-NAR is cut off after
// the stall timeout (2 s here), and nothing is kept.
func TestUploadStalled(t *testing.T) {
	e := newUploadEnv(t, nil)
	it := e.builder.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(64 << 10), Compression: "none"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", it.NARPath, testToken, len(it.File))
	conn.Write(it.File[:1000])
	// Then nothing: the proxy must give up and close the connection.
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the proxy still holds a stalled upload after 15 s")
			}
			break // closed (after an error answer, or without one)
		}
	}
	eventually(t, "the stalled upload is discarded", func() bool { return len(e.tempFiles()) == 0 })
	if ok, _ := e.store.HasNAR(t.Context(), it.FileHash+".nar"); ok {
		t.Fatal("a stalled NAR was kept")
	}
}
