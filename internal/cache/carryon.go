package cache

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// carryOn finishes a response that had sent its first bytes from the part
// file of a download which then stopped being kept (writing to the cache
// dir failed: ENOSPC, EIO). The client is not cut: the rest comes from the
// NAR's upstream with a Range request from where the client is, and the
// whole is checked as before, the bytes already sent hashed again from
// part (still readable through its open handle), the last byte held back
// until everything checks out. An upstream that does not answer the range
// with exactly it ends the response aborted, as it was before.
func (c *Cache) carryOn(w http.ResponseWriter, r *http.Request, name string, src store.NARSource, part io.ReadSeeker, sent, size int64) error {
	ctx := r.Context()
	client, loc, err := c.sourceOf(src, ErrAborted)
	if err != nil {
		return err
	}
	if _, err := part.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%w: reread NAR %s: %w", ErrAborted, name, err)
	}
	p, err := client.FetchNAR(ctx, loc, sent, -1)
	if err != nil {
		if errors.Is(err, upstream.ErrRangeRefused) {
			c.log.Warn("NAR not kept midway; its upstream refused the range that would carry on its clients",
				"nar", name, "upstream", src.Upstream, "offset", sent, "err", err)
		}
		return fmt.Errorf("%w: carry on from the upstream: %w", ErrAborted, err)
	}
	defer p.Body.Close()
	if size >= 0 && p.Size >= 0 && p.Size != size {
		return fmt.Errorf("%w: %w", ErrAborted, verifyFailed("size", "upstream's NAR is %d bytes, expected %d", p.Size, size))
	}
	n, err := c.relayVerified(w, part, p.Body, src, sent, size, "NAR carried on from the upstream")
	if err != nil {
		return err
	}
	c.log.Info("NAR not kept midway; its client carried on from the upstream", "nar", name,
		"store_path", src.StorePath, "from_disk", sent, "from_upstream", n-sent)
	return nil
}
