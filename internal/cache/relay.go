package cache

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// errNotKept means a download was not (or could not be) kept on disk: no
// room within the bound, or writing to the cache dir failed. Its clients
// get the NAR streamed from the upstream instead.
var errNotKept = errors.New("cache: NAR not kept")

// relayFromUpstream streams the NAR called name from its upstream straight to
// w, keeping nothing, for a NAR the cache cannot keep. It checks the bytes
// as the download would and holds back the last one until they check out,
// so a wrong body is cut, never completed with a 200.
func (c *Cache) relayFromUpstream(w http.ResponseWriter, r *http.Request, name string, src store.NARSource) error {
	ctx := r.Context()
	client, loc, err := c.sourceOf(src, ErrNotFound)
	if err != nil {
		return err
	}
	body, size, err := client.NAR(ctx, loc)
	if errors.Is(err, upstream.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return err
	}
	defer body.Close()
	if src.Size > 0 {
		if size >= 0 && size != src.Size {
			return verifyFailed("size", "upstream sends %d bytes, FileSize is %d", size, src.Size)
		}
		size = src.Size
	}
	h := w.Header()
	h.Set("Content-Type", narContentType)
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)

	n, err := c.relayVerified(w, nil, body, src, 0, size, "upstream NAR streamed without keeping")
	if err != nil {
		return err
	}
	c.log.Info("upstream NAR streamed without keeping", "nar", name, "store_path", src.StorePath, "bytes", n)
	return nil
}

// relayVerified sends body to w after the sent bytes the client already
// has (read again from prefix, only to be hashed), checking the whole NAR
// file against src as a download is checked, and writes the last byte
// only once it checks out: a wrong body is cut, never completed. It
// returns the file's total bytes; what names the stream in a warning.
func (c *Cache) relayVerified(w io.Writer, prefix, body io.Reader, src store.NARSource, sent, size int64, what string) (int64, error) {
	check := newNARCheck(src)
	if check != nil {
		defer check.result() // ends its decoder whatever happens
	}
	sum := sha256.New()
	var sink io.Writer = sum
	if check != nil {
		sink = io.MultiWriter(sum, check)
	}
	if sent > 0 {
		if _, err := io.CopyN(sink, prefix, sent); err != nil {
			return 0, fmt.Errorf("%w: read again the %d bytes sent: %w", ErrAborted, sent, err)
		}
	}
	n, last, err := c.copyHeldBack(w, body, sink, sent, size)
	if err != nil {
		return n, err
	}
	if err := verifyNAR(src, size, n, sum.Sum(nil), check); err != nil {
		c.log.Warn(what+" failed its check", "store_path", src.StorePath, "err", err)
		return n, fmt.Errorf("%w: %w", ErrAborted, err)
	}
	if _, err := w.Write(last); err != nil {
		return n, fmt.Errorf("%w: %w", ErrAborted, err)
	}
	c.metrics.ServedBytes.WithLabelValues("upstream").Add(float64(len(last)))
	c.stats.servedUpstream.Add(int64(len(last)))
	return n, nil
}

// copyHeldBack copies body to w and sink, counting from n bytes already
// sent, up to size (-1: unknown), and returns the total and the last byte
// read, which it holds back: the caller writes it once the whole checks
// out, so a wrong body is cut, never completed.
func (c *Cache) copyHeldBack(w io.Writer, body io.Reader, sink io.Writer, n, size int64) (int64, []byte, error) {
	served := c.metrics.ServedBytes.WithLabelValues("upstream")
	buf := make([]byte, 256<<10)
	last := make([]byte, 0, 1)
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			if size >= 0 && n+int64(k) > size {
				return n, nil, fmt.Errorf("%w: %w", ErrAborted, verifyFailed("size", "upstream sent more than %d bytes", size))
			}
			sink.Write(buf[:k])
			n += int64(k)
			if _, err := w.Write(last); err != nil {
				return n, nil, fmt.Errorf("%w: %w", ErrAborted, err)
			}
			if _, err := w.Write(buf[:k-1]); err != nil {
				return n, nil, fmt.Errorf("%w: %w", ErrAborted, err)
			}
			served.Add(float64(len(last) + k - 1))
			c.stats.servedUpstream.Add(int64(len(last) + k - 1))
			last = append(last[:0], buf[k-1])
		}
		if rerr == io.EOF {
			return n, last, nil
		}
		if rerr != nil {
			return n, nil, fmt.Errorf("%w: %w", ErrAborted, rerr)
		}
	}
}
