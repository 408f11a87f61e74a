package s3store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Pins live in the bucket as PREFIX/_proxy/pins/<hash> (the store.Pin as
// JSON), so the proxy that runs eviction for the fleet keeps what any
// proxy pinned.
const pinsDir = "pins/"

// PutPin implements store.Shared.
func (b *Bucket) PutPin(ctx context.Context, p store.Pin) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode pin: %w", err)
	}
	return b.PutMeta(ctx, pinsDir+p.Hash, body)
}

// DeletePin implements store.Shared: fs.ErrNotExist when hash is not
// pinned in the bucket.
func (b *Bucket) DeletePin(ctx context.Context, hash string) error {
	if _, err := b.GetMeta(ctx, pinsDir+hash); err != nil {
		return err
	}
	return b.DeleteMeta(ctx, pinsDir+hash)
}

// PinnedHashes returns the store path hashes pinned on any proxy of the
// bucket.
func (b *Bucket) PinnedHashes(ctx context.Context) ([]string, error) {
	var out []string
	err := b.ListMeta(ctx, pinsDir, func(rel string) error {
		if h := strings.TrimPrefix(rel, pinsDir); h != "" && !strings.Contains(h, "/") {
			out = append(out, h)
		}
		return nil
	})
	return out, err
}
