package cache

import (
	"strconv"
	"testing"
	"time"
)

func TestNegativeCache(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		// age is how far past the add the entry is checked.
		age  time.Duration
		want bool
	}{
		{"fresh", time.Hour, 0, true},
		{"expired", time.Millisecond, 2 * time.Millisecond, false},
		{"disabled", -1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNegativeCache(tt.ttl)
			n.add("k")
			if tt.age > 0 {
				// Expiry is by wall clock; move the entry back in time
				// instead of sleeping.
				n.mu.Lock()
				if e, ok := n.m["k"]; ok {
					e.expiry = e.expiry.Add(-tt.ttl - tt.age)
					n.m["k"] = e
				}
				n.mu.Unlock()
			}
			if got := n.has("k"); got != tt.want {
				t.Errorf("has = %v, want %v", got, tt.want)
			}
			if n.has("other") {
				t.Error("has(other) = true")
			}
		})
	}
}

func TestNegativeCacheForget(t *testing.T) {
	n := newNegativeCache(time.Hour)
	n.add("k")
	n.forget("k")
	if n.has("k") {
		t.Error("has after forget")
	}
}

func TestNegativeCacheBounded(t *testing.T) {
	n := newNegativeCache(time.Hour)
	for i := range negativeCacheMax + 10 {
		n.add(strconv.Itoa(i))
	}
	n.mu.Lock()
	size := len(n.m)
	n.mu.Unlock()
	if size > negativeCacheMax {
		t.Errorf("%d entries, want at most %d", size, negativeCacheMax)
	}
	if !n.has(strconv.Itoa(negativeCacheMax + 9)) {
		t.Error("the newest entry is missing")
	}
}
