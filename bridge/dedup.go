package bridge

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"
)

// Dedup remembers recently handled event ids, to skip redeliveries (delivery
// is at least once). It is per process and in memory: bounded to the size
// most recent ids, each forgotten after ttl. Duplicates across processes or
// restarts need a shared store (the inbox, in package outbox). Safe for
// concurrent use, but Seen and Mark are two steps: two deliveries of one id
// handled at the same moment (a subscriber with several workers) both pass
// Seen before either is marked. Marking after success is what keeps a
// failed event from being skipped on its retry; the inbox, which claims
// the id in the handler's transaction, has no such window.
type Dedup struct {
	mu      sync.Mutex
	size    int
	ttl     time.Duration
	order   *list.List // front = most recent; values are dedupEntry
	items   map[string]*list.Element
	now     func() time.Time
	skipped atomic.Int64
}

type dedupEntry struct {
	id string
	at time.Time
}

// NewDedup returns a Dedup holding at most size ids (default 100,000 if
// size < 1) for ttl each (default 1h if ttl <= 0).
func NewDedup(size int, ttl time.Duration) *Dedup {
	if size < 1 {
		size = 100_000
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	return &Dedup{size: size, ttl: ttl, order: list.New(), items: map[string]*list.Element{}, now: time.Now}
}

// Seen reports whether id was marked within the ttl.
func (d *Dedup) Seen(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	el, ok := d.items[id]
	if !ok {
		return false
	}
	if d.now().Sub(el.Value.(dedupEntry).at) > d.ttl {
		d.order.Remove(el)
		delete(d.items, id)
		return false
	}
	return true
}

// Mark records id as handled, evicting the oldest id beyond the size.
func (d *Dedup) Mark(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.items[id]; ok {
		el.Value = dedupEntry{id: id, at: d.now()}
		d.order.MoveToFront(el)
		return
	}
	d.items[id] = d.order.PushFront(dedupEntry{id: id, at: d.now()})
	for d.order.Len() > d.size {
		oldest := d.order.Back()
		d.order.Remove(oldest)
		delete(d.items, oldest.Value.(dedupEntry).id)
	}
}

// Skipped counts the deliveries a handler skipped because their id was
// seen (redeliveries).
func (d *Dedup) Skipped() int64 { return d.skipped.Load() }
