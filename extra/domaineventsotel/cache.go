package domaineventsotel

import (
	"maps"
	"sync"
	"sync/atomic"
)

// cache maps a few keys (destinations, attribute combinations: low
// cardinality) to values built once. A hit is a pointer load and a map
// lookup, with no write to shared memory, so that concurrent publishers do
// not contend; a miss copies the map under a lock.
type cache[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex
}

// get returns the value of k, built by build on first use.
func (c *cache[K, V]) get(k K, build func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var next map[K]V
	if old := c.m.Load(); old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
		next = maps.Clone(*old)
	} else {
		next = map[K]V{}
	}
	v := build()
	next[k] = v
	c.m.Store(&next)
	return v
}
