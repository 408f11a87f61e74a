package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// partTimeout bounds the upload of one part, or of a whole NAR smaller
// than a part.
const partTimeout = 10 * time.Minute

// Create implements store.NARFiles. The NAR streams to the bucket as it is
// written, part by part (a multipart upload, or one PUT for a NAR smaller
// than a part), never held whole in memory: at most three parts are, the
// one filling and two uploading. It also lands in a local spool file, which
// is what OpenPartial reads: the bucket shows nothing until Commit.
func (b *Bucket) Create(name string) (store.PartFile, error) {
	spool, err := os.CreateTemp(b.spool, name+".*")
	if err != nil {
		return nil, fmt.Errorf("create spool file: %w", err)
	}
	p := &part{
		b: b, key: b.narKey(name), spool: spool,
		buf:   make([]byte, 0, b.partSize),
		queue: make(chan []byte, 1),
		free:  make(chan []byte, 2),
		done:  make(chan struct{}),
	}
	go p.upload()
	return p, nil
}

// part is a NAR being written to the bucket.
type part struct {
	b     *Bucket
	key   string
	spool *os.File
	size  int64

	buf      []byte        // the part being filled
	queued   int           // parts handed to the uploader
	queue    chan []byte   // full parts, to the uploader
	free     chan []byte   // buffers the uploader is done with
	done     chan struct{} // closed when the uploader has stopped
	finished bool

	mu       sync.Mutex
	uploadID string // "" until the first full part
	parts    []types.CompletedPart
	err      error
}

func (p *part) Write(b []byte) (int, error) {
	if err := p.failed(); err != nil {
		return 0, err
	}
	if _, err := p.spool.Write(b); err != nil {
		return 0, fmt.Errorf("write spool file: %w", err)
	}
	n := len(b)
	for len(b) > 0 {
		k := min(len(b), cap(p.buf)-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b = b[k:]
		if len(p.buf) == cap(p.buf) {
			p.queue <- p.buf
			p.queued++
			select {
			case buf := <-p.free:
				p.buf = buf[:0]
			default:
				p.buf = make([]byte, 0, p.b.partSize)
			}
		}
	}
	p.size += int64(n)
	return n, nil
}

func (p *part) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *part) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

// upload sends the full parts as they come, in order. After a failure it
// keeps draining the queue so Write never blocks; Write reports the error.
func (p *part) upload() {
	defer close(p.done)
	for buf := range p.queue {
		if p.failed() == nil {
			if err := p.uploadPart(buf); err != nil {
				p.fail(err)
			}
		}
		select {
		case p.free <- buf:
		default:
		}
	}
}

func (p *part) uploadPart(buf []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	if p.uploadID == "" {
		out, err := p.b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
			Bucket: &p.b.loc.Bucket, Key: &p.key, ContentType: aws.String("application/x-nix-nar"),
		})
		if err != nil {
			return fmt.Errorf("start multipart upload: %w", mapErr(err))
		}
		p.mu.Lock()
		p.uploadID = aws.ToString(out.UploadId)
		p.mu.Unlock()
	}
	num := int32(len(p.parts) + 1)
	out, err := p.b.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &p.b.loc.Bucket, Key: &p.key, UploadId: &p.uploadID,
		PartNumber: aws.Int32(num), Body: bytes.NewReader(buf), ContentLength: aws.Int64(int64(len(buf))),
	})
	if err != nil {
		return fmt.Errorf("upload part %d: %w", num, mapErr(err))
	}
	p.parts = append(p.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
	return nil
}

// Sync implements store.PartFile: durability comes from the bucket at
// Commit, and the spool file is only read while the process lives.
func (p *part) Sync() error { return nil }

// OpenPartial implements store.PartFile: the spool file as written so far.
// After Commit or Discard the spool file is gone and it returns an error
// wrapping fs.ErrNotExist; handles opened before stay readable.
func (p *part) OpenPartial() (store.NARFile, error) { return os.Open(p.spool.Name()) }

// stop ends the uploader and drops the spool file.
func (p *part) stop() {
	close(p.queue)
	<-p.done
	p.spool.Close()
	os.Remove(p.spool.Name())
}

// Commit implements store.PartFile: it uploads the last part and completes
// the upload, refusing to overwrite (If-None-Match: *). A NAR already there
// has the same bytes, since names are content-addressed and every writer
// verified them, so losing that race is success.
func (p *part) Commit() (int64, error) {
	if p.finished {
		return 0, errors.New("s3store: NAR already finished")
	}
	p.finished = true
	if p.queued == 0 {
		// Small enough for one PUT: the uploader never started an upload.
		p.stop()
		if err := p.putWhole(); err != nil {
			return 0, err
		}
		return p.size, nil
	}
	if len(p.buf) > 0 {
		p.queue <- p.buf
	}
	p.stop()
	if err := p.failed(); err != nil {
		p.abort()
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	_, err := p.b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &p.b.loc.Bucket, Key: &p.key, UploadId: &p.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: p.parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err = mapErr(err); errors.Is(err, ErrConflict) {
		p.abort()
		return p.size, nil
	}
	if err != nil {
		p.abort()
		return 0, fmt.Errorf("complete multipart upload: %w", err)
	}
	return p.size, nil
}

func (p *part) putWhole() error {
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	_, err := p.b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &p.b.loc.Bucket, Key: &p.key, Body: bytes.NewReader(p.buf),
		ContentLength: aws.Int64(int64(len(p.buf))), ContentType: aws.String("application/x-nix-nar"),
		IfNoneMatch: aws.String("*"),
	})
	if err = mapErr(err); err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("put NAR: %w", err)
	}
	return nil
}

// abort drops the parts uploaded so far. A crash leaves them behind: a
// bucket lifecycle rule that aborts incomplete multipart uploads after a
// day cleans those up (see deploy/README.md).
func (p *part) abort() {
	if p.uploadID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	p.b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: &p.b.loc.Bucket, Key: &p.key, UploadId: &p.uploadID,
	})
}

// Discard implements store.PartFile.
func (p *part) Discard() error {
	if p.finished {
		return nil
	}
	p.finished = true
	p.fail(errors.New("discarded"))
	p.stop()
	p.abort()
	return nil
}
