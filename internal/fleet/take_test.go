package fleet

import (
	"context"
	"errors"
	"io/fs"
	"strconv"
	"sync"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
)

// lateBucket is a Bucket whose lease writes land when the test says so,
// even after the client gave up on them: an S3 request cut by its
// context may still reach the server and be carried out.
type lateBucket struct {
	mu     sync.Mutex
	leases map[string]string // name → etag
	n      int
	sent   chan struct{} // a write is on the wire
	land   chan struct{} // closed: writes land
	wg     sync.WaitGroup
}

func (b *lateBucket) write(ctx context.Context, name, ifMatch string) (string, error) {
	b.sent <- struct{}{}
	type answer struct {
		etag string
		err  error
	}
	landed := make(chan answer, 1)
	b.wg.Go(func() {
		<-b.land
		b.mu.Lock()
		defer b.mu.Unlock()
		if cur, ok := b.leases[name]; ok != (ifMatch != "") || cur != ifMatch {
			landed <- answer{err: s3store.ErrConflict}
			return
		}
		b.n++
		b.leases[name] = strconv.Itoa(b.n)
		landed <- answer{etag: b.leases[name]}
	})
	select {
	case a := <-landed:
		return a.etag, a.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (b *lateBucket) CreateLease(ctx context.Context, name string, _ []byte) (string, error) {
	return b.write(ctx, name, "")
}

func (b *lateBucket) ReplaceLease(ctx context.Context, name string, _ []byte, etag string) (string, error) {
	return b.write(ctx, name, etag)
}

func (b *lateBucket) Lease(context.Context, string) ([]byte, string, error) {
	return nil, "", errors.New("not used")
}

func (b *lateBucket) DeleteLease(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.leases, name)
	return nil
}

func (b *lateBucket) Stat(string) (int64, error) { return 0, fs.ErrNotExist }

// TestTakeGivenUp: a Claim or TryLease whose context ends while its
// create is on the wire leaves no lease behind, though the create lands:
// such a lease was nobody's, and held up every proxy's fill for a TTL
// (TestOneHolder failed on one now and then on a loaded machine).
func TestTakeGivenUp(t *testing.T) {
	for _, tt := range []struct {
		name string
		take func(context.Context, *Fills) error
	}{
		{"Claim", func(ctx context.Context, f *Fills) error { _, err := f.Claim(ctx, nar); return err }},
		{"TryLease", func(ctx context.Context, f *Fills) error { _, _, err := f.TryLease(ctx, "evict"); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := &lateBucket{leases: map[string]string{}, sent: make(chan struct{}, 1), land: make(chan struct{})}
			f := New(b, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tt.take(ctx, f) }()
			<-b.sent
			cancel()
			close(b.land)
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("%s given up = %v, want context.Canceled", tt.name, err)
			}
			b.wg.Wait()
			if len(b.leases) != 0 {
				t.Errorf("leases left behind: %v", b.leases)
			}
		})
	}
}
