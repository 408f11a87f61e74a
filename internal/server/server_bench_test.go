package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// benchWriter is the least a ResponseWriter can be, reused across
// iterations, so a benchmark counts the handler's allocations and not a
// recorder's.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *benchWriter) reset()                      { clear(w.h); w.code, w.n = 0, 0 }

// benchServer is server.New over a real store holding 256 narinfos and one
// 64 KiB NAR. Its upstream is never asked: every request here is a hit or
// is refused before the cache.
func benchServer(b *testing.B) (http.Handler, []string, string) {
	b.Helper()
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	text := []byte(benchNarInfoText)
	hashes := make([]string, 256)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("%032d", i)
		nar := fmt.Sprintf("%052d.nar.zst", i)
		if err := st.PutNarInfo(ctx, hashes[i], text, nar, store.NARSource{URL: "http://127.0.0.1:1/nar/" + nar}); err != nil {
			b.Fatal(err)
		}
	}
	nar := fmt.Sprintf("%052d.nar.zst", 1)
	w, err := st.CreateNAR(ctx, nar)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	up, err := upstream.New("http://127.0.0.1:1", upstream.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.New(cache.Options{Store: st, Upstreams: upstream.NewGroup([]*upstream.Client{up}, 0), SkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Cache: c})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); st.Close() })
	return srv, hashes, "/nar/" + nar
}

const benchNarInfoText = `StorePath: /nix/store/pk98pfm6qjrkp089rmlcjaqgawcjvx3w-bench-root
URL: nar/0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0.nar.zst
Compression: zstd
FileHash: sha256:0kg979cnm0m0vb8yaj83nj2inp7gyx4g2kig0q699ngaaj8mcyg0
FileSize: 171
NarHash: sha256:0r6jvdwm70q4f7q72x8xxncy6r0irhac38hvja20qjspqg3sh0sk
NarSize: 264
References: 0ikp6gzgzzssxnl0zb5rxb9q716fqikl-bench-small-48 i4mckv57i95zdjcd5gasnmfbr9akhh0p-bench-small-0
Deriver: s20r96xrgvy7vjnx5nvmbwsb8fqyp3kr-bench-root.drv
Sig: bench-1:+ZBesoRXCfMn/PaZJ561/u/SGCKoIu//RtGWnJ4WcnvH2dqwPX6AuFb9DraikkxjROdOPor12Ipd5iAkfXp3CQ==
`

// requests builds one GET per path up front: what net/http would hand the
// handler, without counting its parsing.
func requests(b *testing.B, method string, paths ...string) []*http.Request {
	b.Helper()
	rs := make([]*http.Request, len(paths))
	for i, p := range paths {
		r, err := http.NewRequest(method, "http://cache.lan"+p, nil)
		if err != nil {
			b.Fatal(err)
		}
		rs[i] = r
	}
	return rs
}

func serveBench(b *testing.B, h http.Handler, rs []*http.Request, want int) {
	b.Helper()
	w := &benchWriter{h: make(http.Header)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, rs[i%len(rs)])
		if w.code != want {
			b.Fatalf("%s %s: status %d, want %d", rs[i%len(rs)].Method, rs[i%len(rs)].URL, w.code, want)
		}
		i++
	}
}

// BenchmarkNarInfoHit is the whole handler of a narinfo hit: routing, name
// check, index lookup, headers and body.
func BenchmarkNarInfoHit(b *testing.B) {
	h, hashes, _ := benchServer(b)
	paths := make([]string, len(hashes))
	for i, hash := range hashes {
		paths[i] = "/" + hash + ".narinfo"
	}
	serveBench(b, h, requests(b, http.MethodGet, paths...), http.StatusOK)
}

// BenchmarkNarInfoHitParallel is BenchmarkNarInfoHit from every P at once.
func BenchmarkNarInfoHitParallel(b *testing.B) {
	h, hashes, _ := benchServer(b)
	paths := make([]string, len(hashes))
	for i, hash := range hashes {
		paths[i] = "/" + hash + ".narinfo"
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rs := requests(b, http.MethodGet, paths...)
		w := &benchWriter{h: make(http.Header)}
		i := 0
		for pb.Next() {
			w.reset()
			h.ServeHTTP(w, rs[i%len(rs)])
			if w.code != http.StatusOK {
				b.Errorf("status %d", w.code)
				return
			}
			i++
		}
	})
}

// BenchmarkNARHit serves a 64 KiB NAR from disk (GET) and answers HEAD.
// A benchWriter is no *net.TCPConn, so the body is copied, not sent with
// sendfile: the number is the per-request overhead plus a 64 KiB read.
func BenchmarkNARHit(b *testing.B) {
	h, _, nar := benchServer(b)
	b.Run("GET", func(b *testing.B) { serveBench(b, h, requests(b, http.MethodGet, nar), http.StatusOK) })
	b.Run("HEAD", func(b *testing.B) { serveBench(b, h, requests(b, http.MethodHead, nar), http.StatusOK) })
}

// BenchmarkBadName is a request refused by the name check.
func BenchmarkBadName(b *testing.B) {
	h, _, _ := benchServer(b)
	serveBench(b, h, requests(b, http.MethodGet, "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo"), http.StatusBadRequest)
}

// BenchmarkCacheInfo is the cheapest route: a constant body.
func BenchmarkCacheInfo(b *testing.B) {
	h, _, _ := benchServer(b)
	serveBench(b, h, requests(b, http.MethodGet, "/nix-cache-info"), http.StatusOK)
}
