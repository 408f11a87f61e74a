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
	m   map[string]negative
}

// negative is one remembered "not found".
type negative struct {
	expiry time.Time
	// reason is why, when the answer is worth repeating to the client (a
	// refused narinfo); nil for a plain miss, to keep entries small.
	reason error
}

// negativeCacheMax bounds memory; past it expired entries are swept, and if
// none had expired the map starts over.
const negativeCacheMax = 100_000

func newNegativeCache(ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, m: make(map[string]negative)}
}

func (n *negativeCache) has(key string) bool {
	_, ok := n.get(key)
	return ok
}

// get returns key's entry, if it is remembered as not found.
func (n *negativeCache) get(key string) (negative, bool) {
	if n.ttl < 0 {
		return negative{}, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.m[key]
	if ok && time.Now().After(e.expiry) {
		delete(n.m, key)
		return negative{}, false
	}
	return e, ok
}

func (n *negativeCache) add(key string) { n.addReason(key, nil) }

// addReason remembers key as not found, for reason (may be nil).
func (n *negativeCache) addReason(key string, reason error) {
	if n.ttl < 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.m) >= negativeCacheMax {
		now := time.Now()
		for k, e := range n.m {
			if now.After(e.expiry) {
				delete(n.m, k)
			}
		}
		if len(n.m) >= negativeCacheMax {
			clear(n.m)
		}
	}
	n.m[key] = negative{expiry: time.Now().Add(n.ttl), reason: reason}
}

func (n *negativeCache) forget(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.m, key)
}
