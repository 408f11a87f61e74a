package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// lookupTimeout bounds a narinfo lookup that runs on behalf of several
// clients, detached from any one of them.
const lookupTimeout = time.Minute

// NarInfo returns the narinfo text to serve for hash: from the store, else
// from the first upstream whose answer checks out. It returns ErrNotFound
// when no upstream has it, and an error wrapping ErrUnavailable when
// some upstream could not be asked (that is never remembered as not found).
// Every answer not served from the store is recorded in the miss log.
func (c *Cache) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	text, err := c.store.NarInfo(ctx, hash)
	if !errors.Is(err, store.ErrNotFound) {
		if err == nil {
			c.hits.Inc()
			c.stats.narinfoHits.Add(1)
		}
		return text, err
	}
	c.metrics.Lookups.WithLabelValues("narinfo", "miss").Inc()
	c.stats.narinfoMisses.Add(1)
	var got lookedUp
	if err = c.remembered(hash); err == nil {
		got, err = c.lookup(ctx, hash)
	}
	c.record(hash, true, got, err)
	return got.text, err
}

// remembered is the "not found" the negative cache holds for hash:
// ErrNotFound, or the refusal that made it; nil when it holds none.
func (c *Cache) remembered(hash string) error {
	neg, ok := c.negative.get(hash)
	switch {
	case !ok:
		return nil
	case neg.reason != nil:
		return neg.reason
	}
	return ErrNotFound
}

// lookedUp is what an upstream lookup found.
type lookedUp struct {
	text      []byte
	storePath string
	upstream  string // "" when another flight had already stored it
}

// lookup asks the upstreams, once however many callers ask at the same
// moment. It ignores the negative cache: that is for clients' requests.
func (c *Cache) lookup(ctx context.Context, hash string) (lookedUp, error) {
	// One upstream lookup per hash however many clients ask; it runs
	// detached so the first client hanging up does not fail the others,
	// but it is still the Cache's: Close ends it and waits for it, so it
	// never writes to a closed index.
	ch := c.lookups.DoChan(hash, func() (any, error) {
		if !c.detach() {
			return lookedUp{}, ErrClosed
		}
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		defer context.AfterFunc(c.ctx, cancel)()
		got, err := c.fetchNarInfo(ctx, hash)
		if err != nil && c.ctx.Err() != nil {
			// Cut short by Close. Said to every caller of the flight: one
			// may join it after Close returned (Close waits for this
			// function, not for the flight to be forgotten).
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return got, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return lookedUp{}, res.Err
		}
		return res.Val.(lookedUp), nil
	case <-ctx.Done():
		return lookedUp{}, ctx.Err()
	}
}

// record tells the miss log what a lookup found; asked is false for the
// proxy's own lookups, which must not count as demand.
func (c *Cache) record(hash string, asked bool, got lookedUp, err error) {
	e := store.MissEvent{Hash: hash, Asked: asked, StorePath: got.storePath, Upstream: got.upstream}
	switch {
	case err == nil:
		e.Outcome = store.OutcomeFetched
	case errors.Is(err, ErrRefused) && errors.Is(err, narinfo.ErrUntrusted):
		e.Outcome = store.OutcomeRefusedSignature
	case errors.Is(err, ErrRefused):
		e.Outcome = store.OutcomeRefusedNarInfo
	case errors.Is(err, ErrNotFound):
		e.Outcome = store.OutcomeNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, ErrClosed):
		return
	default:
		e.Outcome = store.OutcomeUpstreamError
	}
	if err != nil && e.Outcome != store.OutcomeNotFound {
		e.Reason = Reason(err) // what the client's X-Nix-Cache-Proxy-Error said
	}
	c.metrics.MissesRecorded.WithLabelValues(e.Outcome).Inc()
	if err != nil {
		if _, serr := c.store.ReadNarInfo(context.Background(), hash); serr == nil {
			// Stored while the upstreams were asked (an upload): nothing
			// is missing, and no one need ask about it again.
			e = store.MissEvent{Hash: hash, Stored: true}
		}
	}
	c.misses.Record(e)
}

func (c *Cache) fetchNarInfo(ctx context.Context, hash string) (lookedUp, error) {
	// Another flight may have stored it since this request missed.
	if text, err := c.store.NarInfo(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		return lookedUp{text: text}, err
	}
	// Another proxy on the same shared storage may have stored it.
	if text, err := c.store.SharedNarInfo(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		return lookedUp{text: text}, err
	}
	// The request that started this lookup, for the log.
	id := reqid.Attr(reqid.From(ctx))
	start := time.Now()
	ans, err := c.upstreams.NarInfo(ctx, hash, func(u *upstream.Client, body []byte) error {
		_, _, _, err := c.admit(u, hash, body)
		if errors.Is(err, narinfo.ErrUntrusted) {
			c.metrics.VerifyFailures.WithLabelValues("signature").Inc()
			c.stats.verifyFailed("signature")
			c.log.Warn("narinfo refused: no trusted signature", id, "hash", hash, "upstream", u.String(), "err", err)
		} else if err != nil {
			// Unparsable, another path's, or its URL on another host.
			c.metrics.VerifyFailures.WithLabelValues("narinfo").Inc()
			c.stats.verifyFailed("narinfo")
			c.log.Warn("narinfo refused", id, "hash", hash, "upstream", u.String(), "err", err)
		}
		if err != nil {
			return &refusedError{err}
		}
		return nil
	})
	c.logLookup(id, hash, ans, err, time.Since(start))
	switch {
	case errors.Is(err, ErrUnavailable):
		return lookedUp{}, err
	case err != nil && ctx.Err() != nil:
		// Out of time before every upstream answered: not a "not found".
		return lookedUp{}, upstream.Unavailable("narinfo "+hash+": upstreams did not all answer in time", err)
	case err != nil:
		err = fmt.Errorf("%w: %w", ErrNotFound, err)
		if errors.Is(err, ErrRefused) {
			// Remembered with its reason, so the next client is told
			// why too, not just "not found".
			c.negative.addReason(hash, err)
		} else {
			c.negative.add(hash)
		}
		return lookedUp{}, err
	}
	text, name, src, err := c.admit(ans.Client, hash, ans.Body)
	if err != nil {
		return lookedUp{}, err
	}
	if err := c.store.PutNarInfo(ctx, hash, text, name, src); err != nil {
		return lookedUp{}, err
	}
	return lookedUp{text: text, storePath: src.StorePath, upstream: src.Upstream}, nil
}

// admit checks an upstream's narinfo for hash and returns the text this proxy
// serves for it (URL rewritten to the NAR's stable local name), that name,
// and where the NAR is fetched from.
func (c *Cache) admit(u *upstream.Client, hash string, body []byte) ([]byte, string, store.NARSource, error) {
	var src store.NARSource
	ni, err := narinfo.Parse(body)
	if err != nil {
		return nil, "", src, err
	}
	if got := narinfo.HashOfStorePath(ni.StorePath); got != hash {
		return nil, "", src, fmt.Errorf("%w: asked for %s, got StorePath %s", narinfo.ErrInvalid, hash, ni.StorePath)
	}
	if c.verify {
		if err := narinfo.Verify(ni, c.keys); err != nil {
			return nil, "", src, err
		}
	}
	// The proxy's signature vouches only for what it checked: a signature
	// by a trusted key. A narinfo kept unchecked (--verify-signatures=false)
	// or on its CA's word is served as the upstream sent it, and a client
	// trusting only the proxy's key refuses it.
	sign := c.secretKey != nil && narinfo.SignedByOneOf(ni, c.keys)
	name := narinfo.NARName(ni)
	if name == "" {
		return nil, "", src, fmt.Errorf("%w: no sha256 FileHash or NarHash", narinfo.ErrInvalid)
	}
	loc, err := u.ResolveNAR(ni.URL)
	if err != nil {
		return nil, "", src, err
	}
	// NarHash, NarSize and Compression are kept for `verify --deep` too.
	src = store.NARSource{Hash: hash, StorePath: ni.StorePath, Upstream: u.String(), URL: loc.String(), Size: int64(ni.FileSize),
		NarHash: ni.NarHash.Digest(), NarSize: int64(ni.NarSize), Compression: ni.Compression}
	if ni.FileHash != nil && ni.FileHash.Algo() == nixhash.SHA256 {
		src.SHA256 = ni.FileHash.Digest()
	} else if ni.Compression == "none" && src.Size == 0 {
		// No FileHash (attic and some S3 uploaders): the download is checked
		// against the uncompressed NAR's hash instead, where we can.
		src.Size = int64(ni.NarSize)
	}
	ni.URL = "nar/" + name
	if sign {
		if err := narinfo.Sign(ni, *c.secretKey); err != nil {
			return nil, "", src, err
		}
	}
	return narinfo.Marshal(ni), name, src, nil
}

// logLookup logs one upstream narinfo lookup: found at info, not found at
// debug (mass queries ask for many paths no one has), failures at warn,
// but at debug when every failing upstream was skipped: that outage was
// logged once, when its breaker opened.
func (c *Cache) logLookup(id slog.Attr, hash string, ans upstream.Answer, err error, d time.Duration) {
	d = d.Round(time.Millisecond)
	path := hash + ".narinfo"
	switch {
	case err == nil:
		c.log.Info("upstream narinfo", id, "path", path, "upstream", ans.Client.String(), "bytes", len(ans.Body),
			"duration", d, "outcome", "found")
	case Skipped(err):
		c.log.Debug("upstream narinfo", id, "path", path, "duration", d, "outcome", "skipped", "err", err)
	case errors.Is(err, ErrUnavailable):
		c.log.Warn("upstream narinfo", id, "path", path, "duration", d, "outcome", "error", "err", err)
	default:
		c.log.Debug("upstream narinfo", id, "path", path, "duration", d, "outcome", "not-found")
	}
}

// StoredNarInfo returns the narinfo text for hash from the store alone, or
// ErrNotFound without asking anyone: the hit path, which needs no request
// id and no upstream. The text is shared and must not be modified.
func (c *Cache) StoredNarInfo(ctx context.Context, hash string) ([]byte, error) {
	text, err := c.store.NarInfo(ctx, hash)
	switch {
	case err == nil:
		c.hits.Inc()
		c.stats.narinfoHits.Add(1)
		return text, nil
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrNotFound
	default:
		return nil, err
	}
}
