package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

var _ store.Shared = (*Bucket)(nil)

// maxSmallObject bounds what is read of a narinfo or NAR source object:
// both are a few hundred bytes, and a bucket is no reason to trust a size.
const maxSmallObject = 1 << 20

func (b *Bucket) sourceKey(name string) string  { return b.loc.key("_proxy/narsrc/" + name) }
func (b *Bucket) narInfoKey(hash string) string { return b.loc.key(hash + ".narinfo") }

// PutSource implements store.Shared. The first Seen any proxy recorded
// stays: --keep-latest orders variants by it, and a proxy seeing an old
// variant for the first time must not make it the newest. So the source
// is created if absent, and otherwise rewritten with the earlier Seen
// (not at all when that changes nothing).
func (b *Bucket) PutSource(ctx context.Context, name string, src store.NARSource) error {
	body, err := json.Marshal(src)
	if err != nil {
		return fmt.Errorf("encode NAR source: %w", err)
	}
	err = b.putIfAbsent(ctx, b.sourceKey(name), body, "application/json")
	if errors.Is(err, ErrConflict) {
		var prev store.NARSource
		if old, gerr := b.get(ctx, b.sourceKey(name)); gerr == nil && json.Unmarshal(old, &prev) == nil {
			if !prev.Seen.IsZero() && (src.Seen.IsZero() || prev.Seen.Before(src.Seen)) {
				src.Seen = prev.Seen
			}
			if body, err = json.Marshal(src); err != nil {
				return fmt.Errorf("encode NAR source: %w", err)
			}
			if bytes.Equal(body, old) {
				return nil
			}
		}
		err = b.put(ctx, b.sourceKey(name), body, "application/json")
	}
	if err != nil {
		return fmt.Errorf("publish NAR source %s: %w", name, err)
	}
	return nil
}

// putIfAbsent writes key unless it exists (ErrConflict then).
func (b *Bucket) putIfAbsent(ctx context.Context, key string, body []byte, contentType string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.loc.Bucket, Key: &key, Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: &contentType,
		IfNoneMatch: aws.String("*"),
	})
	return mapErr(err)
}

// Source implements store.Shared.
func (b *Bucket) Source(ctx context.Context, name string) (store.NARSource, error) {
	var src store.NARSource
	body, err := b.get(ctx, b.sourceKey(name))
	if err != nil {
		return src, fmt.Errorf("NAR source %s: %w", name, err)
	}
	if err := json.Unmarshal(body, &src); err != nil {
		return src, fmt.Errorf("decode NAR source %s: %w", name, err)
	}
	return src, nil
}

// PublishNarInfo implements store.Shared.
func (b *Bucket) PublishNarInfo(ctx context.Context, hash string, text []byte) error {
	if err := b.put(ctx, b.narInfoKey(hash), text, "text/x-nix-narinfo"); err != nil {
		return fmt.Errorf("publish narinfo %s: %w", hash, err)
	}
	return nil
}

// NarInfo implements store.Shared.
func (b *Bucket) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	body, err := b.get(ctx, b.narInfoKey(hash))
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: %w", hash, err)
	}
	return body, nil
}

func (b *Bucket) put(ctx context.Context, key string, body []byte, contentType string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.loc.Bucket, Key: &key, Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: &contentType,
	})
	return mapErr(err)
}

func (b *Bucket) get(ctx context.Context, key string) ([]byte, error) {
	return b.getUpTo(ctx, key, maxSmallObject)
}

// getUpTo reads the object key, refusing one larger than limit bytes.
func (b *Bucket) getUpTo(ctx context.Context, key string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.loc.Bucket, Key: &key})
	if err != nil {
		return nil, mapErr(err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("object larger than %d bytes", limit)
	}
	return body, nil
}

// cacheInfo makes the bucket a binary cache Nix itself can read (as an
// s3:// substituter), written once: a bucket shared by proxies is still
// a plain Nix cache.
const cacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"

func (b *Bucket) putCacheInfo(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.loc.Bucket, Key: aws.String(b.loc.key("nix-cache-info")), Body: bytes.NewReader([]byte(cacheInfo)),
		ContentLength: aws.Int64(int64(len(cacheInfo))), ContentType: aws.String("text/x-nix-cache-info"),
		IfNoneMatch: aws.String("*"),
	})
	if err = mapErr(err); err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("write nix-cache-info: %w", err)
	}
	return nil
}
