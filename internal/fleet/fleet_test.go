package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3test"
)

func openBucket(t *testing.T, srv *s3test.Server, bucket string) *s3store.Bucket {
	t.Helper()
	loc, err := s3store.ParseURL(srv.URL(bucket, ""))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3store.Open(context.Background(), loc, s3store.Options{SpoolDir: filepath.Join(t.TempDir(), "spool"), Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const nar = "1b1z5aldkr6cb7n4mm2jx1svmy2l4g0j4gl2hfhdb2nwsawwq4nr.nar"

// TestOneHolder: eight proxies claim the same fill at once on a real S3
// server; exactly one holds it, the others wait (no peer URL to join)
// until it is released, and then exactly one of them takes it.
func TestOneHolder(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	var fills []*Fills
	for range 8 {
		fills = append(fills, New(openBucket(t, srv, bucket), Options{TTL: time.Minute, Poll: 20 * time.Millisecond}))
	}
	claim := func(fs []*Fills, d time.Duration) (releases []func(), waited int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, f := range fs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), d)
				defer cancel()
				c, err := f.Claim(ctx, nar)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && c.Release != nil:
					releases = append(releases, c.Release)
				case errors.Is(err, context.DeadlineExceeded):
					waited++
				default:
					t.Errorf("Claim = %+v, %v", c, err)
				}
			}()
		}
		wg.Wait()
		return releases, waited
	}
	releases, waited := claim(fills, 2*time.Second)
	if len(releases) != 1 || waited != 7 {
		t.Fatalf("%d proxies hold the fill and %d waited; want 1 and 7", len(releases), waited)
	}
	releases[0]()
	releases, waited = claim(fills[1:], 2*time.Second)
	if len(releases) != 1 || waited != 6 {
		t.Fatalf("after the release, %d proxies hold the fill and %d waited; want 1 and 6", len(releases), waited)
	}
	releases[0]()
}

// TestTakeOver: a lease whose holder stopped renewing it is taken over by
// compare-and-swap once it expires, by one proxy only; a live holder's
// renewals keep it.
func TestTakeOver(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	b := openBucket(t, srv, bucket)
	dead, _ := json.Marshal(lease{Holder: "dead", URL: "http://127.0.0.1:1", Expires: time.Now().Add(time.Second)})
	if _, err := b.CreateLease(context.Background(), "fill/"+nar, dead); err != nil {
		t.Fatal(err)
	}
	live := New(b, Options{TTL: 900 * time.Millisecond, Poll: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := live.Claim(ctx, nar)
	if err != nil || c.Release == nil {
		t.Fatalf("Claim = %+v, %v; want the lease taken over", c, err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("took the lease over after %v, before it expired", d)
	}
	// The dead holder's URL refused each join until then.
	if st := live.Stats(); st.LeasesTakenOver != 1 || st.LeasesTaken != 0 || st.Joins != 0 || st.JoinErrors == 0 {
		t.Errorf("Stats = %+v, want one lease taken over after failed joins", st)
	}
	// Held past several TTLs by renewals: another proxy only waits.
	other := New(openBucket(t, srv, bucket), Options{TTL: time.Second, Poll: 20 * time.Millisecond})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if c2, err := other.Claim(ctx2, nar); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("another proxy's Claim of a renewed lease = %+v, %v; want to wait", c2, err)
	}
	c.Release()
}
