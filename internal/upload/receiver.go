// Package upload receives what `nix copy --to http://…` sends: NAR files,
// then the narinfos that name them, listings, build logs and realisations.
// Nothing becomes visible until it has been checked the way a fetched entry
// is: a NAR against its name's sha256 and, once its narinfo arrives, against
// FileSize, NarHash and NarSize; a narinfo against its signature (or the
// proxy's own key) and its references, which the proxy must be able to
// serve, since a narinfo without its closure breaks clients.
package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// Sentinel errors of uploads; the server maps them to status codes.
var (
	// ErrRejected means the upload is wrong or incomplete (400): the
	// wrapped message says why, for the person running `nix copy`.
	ErrRejected = errors.New("upload rejected")
	// ErrUnsigned means a narinfo carries no trusted signature and the
	// proxy has no key to sign it with (403).
	ErrUnsigned = errors.New("upload rejected: no trusted signature")
	// ErrUnsupported means a compression the proxy cannot check (415).
	ErrUnsupported = errors.New("upload rejected: unsupported compression")
)

func rejected(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, args...))
}

// Store is the part of the store uploads write to.
type Store interface {
	NarInfo(ctx context.Context, hash string) ([]byte, error)
	HasNAR(ctx context.Context, name string) (bool, error)
	OpenNAR(ctx context.Context, name string) (store.NARFile, error)
	CreateNAR(ctx context.Context, name string) (*store.Writer, error)
	PutUpload(ctx context.Context, name string, u store.Upload) error
	UploadOf(ctx context.Context, name string) (store.Upload, error)
	ClaimUpload(ctx context.Context, hash string, text []byte, narName string, src store.NARSource) error
	UnclaimedUploads(ctx context.Context, before time.Time) ([]string, error)
	DropUnclaimedUpload(ctx context.Context, name string) error
	PutAux(ctx context.Context, key string, body []byte) error
}

// Paths answers whether the proxy can serve a reference: from its store or,
// pulling it through, from an upstream.
type Paths interface {
	Lookup(ctx context.Context, hash string) (cache.Entry, error)
	// Stored is told of each narinfo an upload stored, so the path leaves
	// the negative cache and the miss log.
	Stored(hash string)
}

// Options configure a Receiver. Zero values mean defaults.
type Options struct {
	Store Store
	Paths Paths
	// Keys are the trusted keys; an uploaded narinfo signed by one of them
	// is kept as it is (plus the proxy's signature, if it has a key).
	Keys []narinfo.PublicKey
	// SecretKey, if set, signs every accepted narinfo; without it a
	// narinfo with no trusted signature is refused.
	SecretKey *narinfo.SecretKey
	// UnclaimedTTL is how long an uploaded NAR waits for its narinfo
	// before it is dropped; default 1h.
	UnclaimedTTL time.Duration
	// Observe, if set, is told of every upload: kind (nar, narinfo, ls,
	// log, realisation), outcome (ok, exists, rejected, error) and bytes.
	Observe func(kind, outcome string, bytes int64)
	Logger  *slog.Logger
}

// Receiver takes uploads. Close stops its sweeper.
type Receiver struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]*keyLock // one writer per NAR name or narinfo hash

	stop chan struct{}
	done chan struct{}

	stats tally
}

// New returns a Receiver and starts the sweeper of unclaimed NARs.
func New(opts Options) (*Receiver, error) {
	if opts.Store == nil || opts.Paths == nil {
		return nil, errors.New("upload: Store and Paths are required")
	}
	if opts.UnclaimedTTL == 0 {
		opts.UnclaimedTTL = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observe == nil {
		opts.Observe = func(string, string, int64) {}
	}
	r := &Receiver{opts: opts, log: opts.Logger, locks: make(map[string]*keyLock),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.sweepLoop()
	return r, nil
}

// Close stops the sweeper.
func (r *Receiver) Close() {
	close(r.stop)
	<-r.done
}

// lock serialises work on one key, so two concurrent uploads of one path
// leave one entry and do the work once. A key's mutex is shared by every
// caller that holds or waits for it, and dropped by the last of them.
func (r *Receiver) lock(key string) func() {
	r.mu.Lock()
	k, ok := r.locks[key]
	if !ok {
		k = new(keyLock)
		r.locks[key] = k
	}
	k.users++
	r.mu.Unlock()
	k.mu.Lock()
	return func() {
		k.mu.Unlock()
		r.mu.Lock()
		if k.users--; k.users == 0 {
			delete(r.locks, key)
		}
		r.mu.Unlock()
	}
}

// keyLock is one key's mutex and how many callers hold or wait for it.
type keyLock struct {
	mu    sync.Mutex
	users int // guarded by Receiver.mu
}

// compressionOf returns the Compression a NAR name's suffix stands for.
func compressionOf(name string) string {
	switch {
	case strings.HasSuffix(name, ".nar"):
		return "none"
	case strings.HasSuffix(name, ".nar.xz"):
		return "xz"
	case strings.HasSuffix(name, ".nar.zst"):
		return "zstd"
	case strings.HasSuffix(name, ".nar.bz2"):
		return "bzip2"
	case strings.HasSuffix(name, ".nar.gz"):
		return "gzip"
	}
	return name[strings.Index(name, ".nar")+len(".nar."):]
}

// digestOf is the sha256 a NAR name (already validated) states.
func digestOf(name string) ([]byte, error) {
	return nixbase32.DecodeString(name[:52])
}

func sha256Of(h *nixhash.HashWithEncoding) []byte {
	if h == nil || h.Algo() != nixhash.SHA256 {
		return nil
	}
	return h.Digest()
}

// equalDigest compares two digests; nil never equals anything.
func equalDigest(a, b []byte) bool { return a != nil && bytes.Equal(a, b) }

// drain reads what is left of a body the receiver does not need, so the
// client's connection stays usable.
func drain(body io.Reader) { io.Copy(io.Discard, io.LimitReader(body, 1<<20)) }
