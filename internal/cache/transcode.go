package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/recompress"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// Recompression. A NAR whose upstream file is xz, bzip2 or none (from
// recompress.MinNAR) is first fetched and served as it is: the first
// clients stream it as fast as without this. Once it is committed, it is
// recompressed beside them to a zstd file named from its NarHash
// (recompress.Name), checked against NarHash/NarSize, committed, and the
// narinfo then points at it with FileHash/FileSize of the zstd file (no
// signature covers those). The original file is evicted after a grace
// (dropOriginal): the zstd file is the entry. A narinfo handed out before
// still names the original, whose source row stays: asking for it
// refills it from its upstream.
//
// An evicted zstd file (source row with From) is rebuilt from its original
// and streamed to its clients as it is written (rebuild.go).

// transcodeTimeout bounds one recompression.
const transcodeTimeout = time.Hour

// afterFill queues the NAR name just fetched from src for recompression
// (transcodequeue.go), if it is one to recompress.
func (c *Cache) afterFill(name string, src store.NARSource) {
	if !c.recompress || src.From != "" || src.Hash == "" {
		return
	}
	c.enqueueTranscode(src.Hash, name)
}

// transcodeShared runs transcode once per original however many callers
// ask at the same moment, detached from each of them; it returns the zstd
// file's name, or "" when the NAR is not recompressed. g, if not nil, is
// waited on before each read of the original (a background job); a
// caller joining one that runs waits for it as it goes.
func (c *Cache) transcodeShared(ctx context.Context, hash, orig string, g gate) (string, error) {
	ch := c.transcodes.DoChan(orig, func() (any, error) {
		if !c.detach() {
			return "", ErrClosed
		}
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, transcodeTimeout)
		defer cancel()
		return c.transcode(ctx, hash, orig, g)
	})
	select {
	case res := <-ch:
		name, _ := res.Val.(string)
		return name, res.Err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// transcode recompresses the stored NAR orig, named by hash's narinfo, and
// points that narinfo at the result. It returns the zstd file's name, or ""
// when the narinfo does not call for it.
func (c *Cache) transcode(ctx context.Context, hash, orig string, g gate) (string, error) {
	ni, err := c.storedNarInfo(ctx, hash)
	if err != nil {
		return "", err
	}
	if ni.NarHash == nil || ni.NarHash.Algo() != nixhash.SHA256 {
		return "", nil
	}
	zname := recompress.Name(ni.NarHash.Digest())
	url := strings.TrimPrefix(ni.URL, "nar/")
	switch {
	case url == zname:
		// Pointed at it already: orig was refilled for an old narinfo
		// (or this is a second job). The zstd file is made if it was
		// evicted meanwhile (a client waiting joins its rebuild), then
		// the original goes again.
		if err := c.EnsureNAR(ctx, zname, nil); err != nil {
			return "", err
		}
		c.dropOriginal(orig)
		return zname, nil
	case url != orig || !recompress.Eligible(ni.Compression, int64(ni.NarSize)):
		return "", nil
	}
	osrc, err := c.store.NARSource(ctx, orig)
	if err != nil {
		return "", fmt.Errorf("source of %s: %w", orig, err)
	}
	compression, ok := compressionOf(orig)
	if !ok || !recompress.Eligible(compression, int64(ni.NarSize)) {
		return "", nil
	}
	res, err := c.writeZstd(ctx, orig, zname, compression, ni, g)
	if errors.Is(err, errIncompressible) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := c.pointAt(ctx, hash, ni, zname, orig, osrc, res); err != nil {
		return "", err
	}
	c.dropOriginal(orig)
	return zname, nil
}

// storedNarInfo is hash's narinfo as the store keeps it.
func (c *Cache) storedNarInfo(ctx context.Context, hash string) (*narinfo.Info, error) {
	text, err := c.store.ReadNarInfo(ctx, hash)
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("stored narinfo %s: %w", hash, err)
	}
	return ni, nil
}

// pointAt points hash's narinfo ni at the zstd file zname made from orig
// (whose source row is osrc), as res describes it: URL, Compression,
// FileHash, FileSize, which no signature covers.
func (c *Cache) pointAt(ctx context.Context, hash string, ni *narinfo.Info, zname, orig string, osrc store.NARSource, res recompress.Result) error {
	zsrc := store.NARSource{Hash: hash, StorePath: ni.StorePath, Upstream: osrc.Upstream, From: orig,
		Size: res.Out, SHA256: res.SHA256, NarHash: ni.NarHash.Digest(), NarSize: int64(ni.NarSize),
		Compression: "zstd", Seen: osrc.Seen}
	ni.URL, ni.Compression = "nar/"+zname, "zstd"
	ni.FileHash, ni.FileSize = nixhash.MustNewHashWithEncoding(nixhash.SHA256, res.SHA256, nixhash.NixBase32, true), uint64(res.Out)
	return c.store.PutNarInfo(ctx, hash, narinfo.Marshal(ni), zname, zsrc)
}

// dropOriginal evicts the original file once the zstd file is the entry,
// after a grace: a client that fetched the narinfo just before it moved
// (nix asks for the NAR right after) still finds the original on disk,
// even with the upstream down. Later, the original is refilled from its
// upstream for whoever still holds a narinfo naming it. A proxy stopped
// during the grace leaves the original to the eviction's LRU.
func (c *Cache) dropOriginal(orig string) {
	if !c.detach() {
		return
	}
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(c.recompressGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return
		}
		if _, err := c.store.EvictNARs(c.ctx, []string{orig}); err != nil {
			c.log.Warn("recompress: evict the original", "nar", orig, "err", err)
		}
	}()
}

// errIncompressible: an uncompressed NAR that zstd would not shrink
// (recompress.Worthwhile) stays as it is.
var errIncompressible = errors.New("NAR does not compress")

// errNoRoom: the disk bound had no room for the zstd file (Room.Reserve
// refused it): the NAR stays as it is, served in its own compression.
var errNoRoom = errors.New("no room for the zstd file")

// growingWriter grows a reservation of held bytes as the bytes written
// pass it, a step ahead (an eighth more, at least 1 MiB), so the bound is
// not checked at every write.
type growingWriter struct {
	w       io.Writer
	n, held int64
	grow    func(total int64)
}

func (g *growingWriter) Write(p []byte) (int, error) {
	n, err := g.w.Write(p)
	if g.n += int64(n); g.n > g.held {
		g.held = g.n + max(g.n/8, 1<<20)
		g.grow(g.held)
	}
	return n, err
}

// writeZstd recompresses the stored file orig into the store as zname,
// keeping it only if the NAR inside is the one ni names.
func (c *Cache) writeZstd(ctx context.Context, orig, zname, compression string, ni *narinfo.Info, g gate) (recompress.Result, error) {
	var res recompress.Result
	f, err := c.store.OpenNAR(ctx, orig)
	if err != nil {
		return res, fmt.Errorf("open %s to recompress it: %w", orig, err)
	}
	defer f.Close()
	if compression == "none" {
		worth, err := recompress.Worthwhile(f, int64(ni.NarSize))
		if err != nil {
			return res, err
		}
		if !worth {
			c.metrics.Recompressed.WithLabelValues("incompressible").Inc()
			c.log.Info("recompress", "nar", orig, "store_path", ni.StorePath, "outcome", "incompressible")
			return res, errIncompressible
		}
	}
	var in io.Reader = f
	if g != nil {
		in = &gatedReader{ctx: ctx, r: f, gate: g}
	}
	// Room first, as for a download (the zstd file counts toward the bound
	// like any NAR file): its size is known only once it is written, so
	// the room held is what it can take (recompress.Room: more than an xz
	// original), and the reservation still grows with any byte written
	// past it, so the bound counts every byte that lands. With no room,
	// the NAR stays as it is.
	info, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("stat %s: %w", orig, err)
	}
	need := recompress.Room(compression, info.Size(), int64(ni.NarSize))
	grow, release, err := c.room.Reserve(ctx, need)
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		c.metrics.Recompressed.WithLabelValues("no-room").Inc()
		return res, fmt.Errorf("%w: %w", errNoRoom, err)
	}
	var kept bool
	var writeErr error
	defer func() { release(kept, writeErr) }()
	wr, err := c.store.CreateNAR(ctx, zname)
	if err != nil {
		writeErr = err
		return res, err
	}
	defer wr.Cancel()
	start := time.Now()
	out := &growingWriter{w: wr, held: need, grow: grow}
	res, err = c.transcodeCounted(ctx, out, in, compression, ni)
	if errors.Is(err, recompress.ErrWrite) {
		writeErr = err
	}
	if err != nil {
		return res, err
	}
	if err := wr.Commit(ctx); err != nil {
		c.metrics.Recompressed.WithLabelValues("error").Inc()
		c.stats.recErrors.Add(1)
		writeErr = err
		return res, err
	}
	kept = true
	c.recompressed(res)
	c.log.Info("recompress", "nar", orig, "to", zname, "store_path", ni.StorePath, "in", res.In, "out", res.Out,
		"duration", time.Since(start).Round(time.Millisecond), "outcome", "done")
	return res, nil
}

// transcodeCounted is recompress.Transcode of ni's NAR from r to w, its
// CPU time and failures counted.
func (c *Cache) transcodeCounted(ctx context.Context, w io.Writer, r io.Reader, compression string, ni *narinfo.Info) (recompress.Result, error) {
	// Transcode runs on this goroutine alone: locked to its thread, the
	// thread's CPU time is the recompression's.
	runtime.LockOSThread()
	cpu := threadCPU()
	res, err := recompress.Transcode(ctx, w, r, compression, ni.NarHash.Digest(), int64(ni.NarSize))
	spent := threadCPU() - cpu
	c.metrics.RecompressCPU.Add(spent.Seconds())
	c.stats.recCPU.Add(int64(spent))
	runtime.UnlockOSThread()
	switch {
	case errors.Is(err, recompress.ErrMismatch):
		c.metrics.Recompressed.WithLabelValues("mismatch").Inc()
		c.metrics.VerifyFailures.WithLabelValues("hash").Inc()
		c.stats.recMismatch.Add(1)
		c.stats.verifyFailed("hash")
		c.log.Warn("recompress", "store_path", ni.StorePath, "outcome", "mismatch", "err", err)
	case err != nil:
		c.metrics.Recompressed.WithLabelValues("error").Inc()
		c.stats.recErrors.Add(1)
	}
	return res, err
}

// recompressed counts a zstd file kept.
func (c *Cache) recompressed(res recompress.Result) {
	c.metrics.Recompressed.WithLabelValues("done").Inc()
	c.metrics.RecompressBytes.WithLabelValues("in").Add(float64(res.In))
	c.metrics.RecompressBytes.WithLabelValues("out").Add(float64(res.Out))
	c.stats.recDone.Add(1)
	c.stats.recIn.Add(res.In)
	c.stats.recOut.Add(res.Out)
}

// compressionOf reads an original file's compression from its name
// (narinfo.NARName): the narinfo names the zstd file once it is made.
func compressionOf(name string) (string, bool) {
	switch {
	case strings.HasSuffix(name, ".nar.xz"):
		return "xz", true
	case strings.HasSuffix(name, ".nar.bz2"):
		return "bzip2", true
	case strings.HasSuffix(name, ".nar"):
		return "none", true
	}
	return "", false
}
