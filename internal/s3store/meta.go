package s3store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The proxies' own records beside the cache live under PREFIX/_proxy/ as
// small objects: leases, NAR sources, pins, the accesses each proxy
// publishes and the eviction's pending list. Meta names are paths below
// _proxy/ ("pins/<hash>", "access/2026-11-30/<node>").
func (b *Bucket) metaKey(rel string) string { return b.loc.key("_proxy/" + rel) }

// PutMeta writes the record rel, replacing any.
func (b *Bucket) PutMeta(ctx context.Context, rel string, body []byte) error {
	if err := b.put(ctx, b.metaKey(rel), body, "application/json"); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	return nil
}

// GetMeta reads the record rel; fs.ErrNotExist when there is none. Records
// are bounded to 64 MiB (the merged access record of a large bucket).
func (b *Bucket) GetMeta(ctx context.Context, rel string) ([]byte, error) {
	body, err := b.getUpTo(ctx, b.metaKey(rel), maxMetaObject)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	return body, nil
}

// maxMetaObject bounds what is read of one record.
const maxMetaObject = 64 << 20

// DeleteMeta drops the record rel; dropping one that is not there is not
// an error (S3 deletes are idempotent).
func (b *Bucket) DeleteMeta(ctx context.Context, rel string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.metaKey(rel))})
	if err != nil {
		return fmt.Errorf("delete %s: %w", rel, mapErr(err))
	}
	return nil
}

// ListMeta calls fn with the name (below _proxy/) of every record under
// prefix, in lexical order, and stops at fn's first error.
func (b *Bucket) ListMeta(ctx context.Context, prefix string, fn func(rel string) error) error {
	base := b.metaKey("")
	full := base + prefix
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.loc.Bucket, Prefix: &full})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, mapErr(err))
		}
		for _, o := range page.Contents {
			if err := fn(strings.TrimPrefix(aws.ToString(o.Key), base)); err != nil {
				return err
			}
		}
	}
	return nil
}

// NARObject is a NAR file in the bucket as a listing shows it.
type NARObject struct {
	Name     string
	Size     int64
	Modified time.Time // when it was last written: its fill or upload
}

// ListNARObjects calls fn for every NAR file in the bucket, with its
// size and when it was written, and stops at fn's first error.
func (b *Bucket) ListNARObjects(ctx context.Context, fn func(NARObject) error) error {
	prefix := b.narKey("")
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.loc.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list NARs: %w", mapErr(err))
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if name == "" || strings.Contains(name, "/") {
				continue
			}
			if err := fn(NARObject{Name: name, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// StatNARObject returns the NAR file name as it is now; fs.ErrNotExist
// when it is not in the bucket.
func (b *Bucket) StatNARObject(ctx context.Context, name string) (NARObject, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.narKey(name))})
	if err != nil {
		return NARObject{}, fmt.Errorf("stat NAR %s: %w", name, mapErr(err))
	}
	return NARObject{Name: name, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

// DeleteNARObject deletes the NAR file name. Its narinfo and source stay:
// a client holding the narinfo gets the NAR refilled.
func (b *Bucket) DeleteNARObject(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.narKey(name))})
	if err != nil {
		return fmt.Errorf("delete NAR %s: %w", name, mapErr(err))
	}
	return nil
}
