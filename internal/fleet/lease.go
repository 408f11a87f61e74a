package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
)

// ErrHeld means another proxy holds the lease, live.
var ErrHeld = errors.New("fleet: lease held by another proxy")

// TryLease takes the lease name (an object under _proxy/lease/) for work
// that one proxy of the bucket at a time may do, such as eviction: it is
// created if absent, taken over by compare-and-swap if its holder let it
// expire, and otherwise left alone (an error wrapping ErrHeld that names
// the holder). It never waits. The lease is renewed every TTL/3; held
// ends when it is lost (another proxy took it over: this one looked dead)
// or released. release deletes it.
func (f *Fills) TryLease(ctx context.Context, name string) (held context.Context, release func(), err error) {
	etag, err := f.take(ctx, name, func(ctx context.Context) (string, error) { return f.b.CreateLease(ctx, name, f.body()) })
	if errors.Is(err, s3store.ErrConflict) {
		data, cur, rerr := f.b.Lease(ctx, name)
		if errors.Is(rerr, fs.ErrNotExist) {
			// Released meanwhile: the next try takes it.
			return nil, nil, fmt.Errorf("%w: released just now", ErrHeld)
		}
		if rerr != nil {
			return nil, nil, rerr
		}
		var l lease
		if json.Unmarshal(data, &l) == nil && time.Now().Before(l.Expires) {
			return nil, nil, fmt.Errorf("%w: %s until %s", ErrHeld, l.Holder, l.Expires.Format(time.RFC3339))
		}
		etag, err = f.take(ctx, name, func(ctx context.Context) (string, error) { return f.b.ReplaceLease(ctx, name, f.body(), cur) })
		if errors.Is(err, s3store.ErrConflict) {
			return nil, nil, fmt.Errorf("%w: taken over by another proxy just now", ErrHeld)
		}
		if err == nil {
			f.log.Warn("fleet: took over an expired lease", "lease", name, "from", l.Holder)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	held, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := f.hold(name, etag, func(key string) {
		f.log.Warn("fleet: lost a lease to another proxy", "lease", key)
		cancel()
	})
	return held, func() { stop(); cancel() }, nil
}
