package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// Bucket is a proxy's view of its bucket. It is safe for concurrent use.
type Bucket struct {
	loc      Location
	client   *s3.Client
	spool    string // local dir for the copies that followers of a fill read
	partSize int64
	joinWait time.Duration
	stats    *tally
}

// Options configure a Bucket. Zero values mean defaults.
type Options struct {
	// SpoolDir holds a local copy of each NAR being written, which clients
	// following the download read while the bucket has nothing yet.
	// Required; its contents are swept at Open.
	SpoolDir string
	// Credentials, if set, replace the usual AWS chain (environment,
	// shared credentials file and profile, SSO, instance role).
	Credentials aws.CredentialsProvider
	// PartSize is the size of one part of a multipart upload, and what a
	// fill holds in memory per part in flight; default 16 MiB.
	PartSize int64
	// JoinWait bounds how long a proxy that streamed a NAR from the peer
	// filling it waits for the peer's copy in the bucket before it
	// uploads its own; default 1m.
	JoinWait time.Duration
	// HTTPClient, if set, makes the bucket requests.
	HTTPClient *http.Client
	// Observe, if set, is told of every bucket operation (the S3 API's
	// name: GetObject, PutObject...) once it ends, retries included: its
	// result (ok, not-found, conflict, error) and how long it took to its
	// response headers.
	Observe func(op, result string, d time.Duration)
}

// Open returns the bucket at loc. It checks that the bucket answers, so a
// wrong endpoint or missing credentials fail at start rather than on the
// first client's request.
func Open(ctx context.Context, loc Location, opts Options) (*Bucket, error) {
	if opts.SpoolDir == "" {
		return nil, errors.New("s3store: SpoolDir is required")
	}
	if opts.PartSize == 0 {
		opts.PartSize = 16 << 20
	}
	if opts.PartSize < 5<<20 {
		return nil, errors.New("s3store: PartSize below S3's 5 MiB minimum")
	}
	if err := os.MkdirAll(opts.SpoolDir, 0o755); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	if err := sweep(opts.SpoolDir); err != nil {
		return nil, err
	}
	loadOpts := []func(*config.LoadOptions) error{config.WithRegion(loc.Region)}
	if loc.Profile != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(loc.Profile))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	if opts.HTTPClient != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(opts.HTTPClient))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 config: %w", err)
	}
	stats := new(tally)
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if loc.Endpoint != "" {
			o.BaseEndpoint = aws.String(loc.Scheme + "://" + loc.Endpoint)
			// Self-hosted servers rarely have a DNS name per bucket.
			o.UsePathStyle = true
		}
		// Checksums only where S3 requires them: several S3-compatible
		// servers refuse the SDK's default trailing checksums.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.APIOptions = append(o.APIOptions, observe(func(op, result string, d time.Duration) {
			stats.add(result, d)
			if opts.Observe != nil {
				opts.Observe(op, result, d)
			}
		}))
	})
	if opts.JoinWait <= 0 {
		opts.JoinWait = time.Minute
	}
	b := &Bucket{loc: loc, client: client, spool: opts.SpoolDir, partSize: opts.PartSize, joinWait: opts.JoinWait, stats: stats}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(loc.Bucket)}); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", loc, mapErr(err))
	}
	if err := b.putCacheInfo(ctx); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", loc, err)
	}
	return b, nil
}

// Location is where the bucket is.
func (b *Bucket) Location() Location { return b.loc }

func sweep(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("sweep spool dir: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("sweep spool dir: %w", err)
		}
	}
	return nil
}

// observe adds a middleware that reports each operation to fn.
func observe(fn func(op, result string, d time.Duration)) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		op := st.ID()
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("NixCacheProxyObserve",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				start := time.Now()
				out, md, err := next.HandleInitialize(ctx, in)
				fn(op, result(mapErr(err)), time.Since(start))
				return out, md, err
			}), middleware.Before)
	}
}

// result is an operation's outcome as metrics label it.
func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, fs.ErrNotExist):
		return "not-found"
	case errors.Is(err, ErrConflict):
		return "conflict"
	default:
		return "error"
	}
}

// mapErr turns "no such key" into fs.ErrNotExist and 412 into ErrConflict,
// keeping the SDK's error for the message.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
		case http.StatusPreconditionFailed, http.StatusConflict:
			return fmt.Errorf("%w: %w", ErrConflict, err)
		}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
		case "PreconditionFailed", "ConditionalRequestConflict":
			return fmt.Errorf("%w: %w", ErrConflict, err)
		}
	}
	return err
}
