package s3store

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

var _ store.NARFiles = (*Bucket)(nil)

// opTimeout bounds one bucket request that moves no NAR body: a HEAD, a
// small object, a delete, a list page.
const opTimeout = 30 * time.Second

func (b *Bucket) narKey(name string) string { return b.loc.key("nar/" + name) }

// Open implements store.NARFiles. It costs one HEAD; the body is fetched
// on the first Read, from the offset the reader was seeked to, so Range
// requests fetch only what they send.
func (b *Bucket) Open(name string) (store.NARFile, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.narKey(name))})
	if err != nil {
		return nil, fmt.Errorf("open NAR %s: %w", name, mapErr(err))
	}
	return &objectReader{
		b: b, key: b.narKey(name), etag: aws.ToString(out.ETag),
		info: fileInfo{name: name, size: aws.ToInt64(out.ContentLength), mod: aws.ToTime(out.LastModified)},
	}, nil
}

// Stat implements store.NARFiles.
func (b *Bucket) Stat(name string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.narKey(name))})
	if err != nil {
		return 0, fmt.Errorf("stat NAR %s: %w", name, mapErr(err))
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Remove implements store.NARFiles. S3 deletes are idempotent, so a NAR
// already gone is fs.ErrNotExist only if a HEAD says so first; readers
// holding it open may fail, unlike with a local file.
func (b *Bucket) Remove(name string) error {
	if _, err := b.Stat(name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.narKey(name))})
	if err != nil {
		return fmt.Errorf("remove NAR %s: %w", name, mapErr(err))
	}
	return nil
}

// List implements store.NARFiles.
func (b *Bucket) List(ctx context.Context, fn func(name string, size int64) error) error {
	return b.ListNARObjects(ctx, func(o NARObject) error { return fn(o.Name, o.Size) })
}

// objectReader reads an object with ranged GETs: Seek only moves the
// offset, and Read opens the body from there when it has none.
type objectReader struct {
	b    *Bucket
	key  string
	etag string
	info fileInfo

	off  int64
	body io.ReadCloser
}

func (r *objectReader) Stat() (fs.FileInfo, error) { return r.info, nil }

func (r *objectReader) Read(p []byte) (int, error) {
	if r.off >= r.info.size {
		return 0, io.EOF
	}
	if r.body == nil {
		// Not bounded by opTimeout: the body of a large NAR streams for as
		// long as the client reads it.
		in := &s3.GetObjectInput{
			Bucket: &r.b.loc.Bucket, Key: &r.key,
			Range: aws.String(fmt.Sprintf("bytes=%d-", r.off)),
		}
		if r.etag != "" {
			// The name is content-addressed, so a different ETag can only
			// mean a re-upload of the same bytes; refusing it keeps a
			// half-read body from mixing two objects.
			in.IfMatch = &r.etag
		}
		out, err := r.b.client.GetObject(context.Background(), in)
		if err != nil {
			return 0, fmt.Errorf("read NAR %s: %w", path.Base(r.key), mapErr(err))
		}
		r.body = out.Body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.info.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *objectReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.info.size + offset
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek: negative offset %d", abs)
	}
	if abs != r.off && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.off = abs
	return abs, nil
}

func (r *objectReader) Close() error {
	if r.body != nil {
		err := r.body.Close()
		r.body = nil
		return err
	}
	return nil
}

// fileInfo is what Stat of an object reports.
type fileInfo struct {
	name string
	size int64
	mod  time.Time
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() fs.FileMode  { return 0o444 }
func (fi fileInfo) ModTime() time.Time { return fi.mod }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }
