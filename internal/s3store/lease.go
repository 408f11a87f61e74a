package s3store

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Leases are small objects under PREFIX/_proxy/lease/ that proxies take
// and renew with conditional writes: S3's If-None-Match: * and If-Match
// make create and compare-and-swap atomic, so the bucket needs no lock
// server beside it.
func (b *Bucket) leaseKey(name string) string { return b.loc.key("_proxy/lease/" + name) }

// CreateLease writes the lease name if no such object exists, and returns
// its ETag; ErrConflict when another proxy's lease is there.
func (b *Bucket) CreateLease(ctx context.Context, name string, body []byte) (string, error) {
	return b.putLease(ctx, name, body, &s3.PutObjectInput{IfNoneMatch: aws.String("*")})
}

// ReplaceLease overwrites the lease name if its ETag is still etag (a
// renewal, or taking over an expired lease), and returns the new ETag;
// ErrConflict when it changed meanwhile.
func (b *Bucket) ReplaceLease(ctx context.Context, name string, body []byte, etag string) (string, error) {
	return b.putLease(ctx, name, body, &s3.PutObjectInput{IfMatch: &etag})
}

func (b *Bucket) putLease(ctx context.Context, name string, body []byte, in *s3.PutObjectInput) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	in.Bucket, in.Key = &b.loc.Bucket, aws.String(b.leaseKey(name))
	in.Body, in.ContentLength = bytes.NewReader(body), aws.Int64(int64(len(body)))
	in.ContentType = aws.String("application/json")
	out, err := b.client.PutObject(ctx, in)
	if err != nil {
		return "", fmt.Errorf("lease %s: %w", name, mapErr(err))
	}
	return aws.ToString(out.ETag), nil
}

// Lease reads the lease name and its ETag; fs.ErrNotExist when none.
func (b *Bucket) Lease(ctx context.Context, name string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.leaseKey(name))})
	if err != nil {
		return nil, "", fmt.Errorf("lease %s: %w", name, mapErr(err))
	}
	defer out.Body.Close()
	body, err := io.ReadAll(io.LimitReader(out.Body, maxSmallObject))
	if err != nil {
		return nil, "", fmt.Errorf("lease %s: %w", name, err)
	}
	return body, aws.ToString(out.ETag), nil
}

// DeleteLease drops the lease name.
func (b *Bucket) DeleteLease(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// Not every S3-compatible server takes If-Match on DELETE; a lease
	// deleted just after another proxy took it over only makes the next
	// fill of that NAR start sooner.
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.leaseKey(name))})
	if err != nil {
		return fmt.Errorf("delete lease %s: %w", name, mapErr(err))
	}
	return nil
}
