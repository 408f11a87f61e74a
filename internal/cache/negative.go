package cache

import (
	"sync"
	"time"
)

// negativeCache remembers "not found anywhere" answers for a while, so a
// client that asks the same missing path in a loop costs the upstreams once
// per TTL. Upstream errors never land here.
type negativeCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]time.Time // key -> expiry
}

// negativeCacheMax bounds memory; past it expired entries are swept, and if
// none had expired the map starts over.
const negativeCacheMax = 100_000

func newNegativeCache(ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, m: make(map[string]time.Time)}
}

func (n *negativeCache) has(key string) bool {
	if n.ttl < 0 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.m[key]
	if ok && time.Now().After(exp) {
		delete(n.m, key)
		return false
	}
	return ok
}

func (n *negativeCache) add(key string) {
	if n.ttl < 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.m) >= negativeCacheMax {
		now := time.Now()
		for k, exp := range n.m {
			if now.After(exp) {
				delete(n.m, k)
			}
		}
		if len(n.m) >= negativeCacheMax {
			clear(n.m)
		}
	}
	n.m[key] = time.Now().Add(n.ttl)
}

func (n *negativeCache) forget(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.m, key)
}
