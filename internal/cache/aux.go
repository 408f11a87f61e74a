package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/reqid"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
)

// Aux returns a NAR listing ("<hash>.ls") or build log ("log/<name>") from
// the store, else from the first upstream that has it, keeping it. Errors
// are as for NarInfo.
func (c *Cache) Aux(ctx context.Context, key string) ([]byte, error) {
	body, err := c.store.Aux(ctx, key)
	if !errors.Is(err, store.ErrNotFound) {
		return body, err
	}
	if c.negative.has(key) {
		return nil, ErrNotFound
	}
	var unavailable []error
	for _, u := range c.upstreams.Clients() {
		start := time.Now()
		body, err := u.Get(ctx, key)
		switch {
		case err == nil:
			c.log.Info("upstream file", reqid.Attr(reqid.From(ctx)), "path", key, "upstream", u.String(),
				"bytes", len(body), "duration", time.Since(start).Round(time.Millisecond), "outcome", "found")
			if err := c.store.PutAux(ctx, key, body); err != nil {
				return nil, err
			}
			return body, nil
		case errors.Is(err, upstream.ErrNotFound):
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			unavailable = append(unavailable, err)
		}
	}
	if len(unavailable) > 0 {
		return nil, errors.Join(unavailable...)
	}
	c.negative.add(key)
	return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
}
