package broker

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// BusHandlerOption configures [BusHandler].
type BusHandlerOption func(*busHandler)

type busHandler struct {
	bus   *eventbus.Bus
	reg   *events.Registry
	dedup *Dedup
}

// WithRegistry decodes with reg instead of the order-event registry.
func WithRegistry(reg *events.Registry) BusHandlerOption {
	return func(h *busHandler) { h.reg = reg }
}

// WithDedup skips deliveries whose event id d has seen handled. Default:
// none (every redelivery is handled again).
func WithDedup(d *Dedup) BusHandlerOption {
	return func(h *busHandler) { h.dedup = d }
}

type envelopeKey struct{}

// EnvelopeFrom returns the envelope of the event being handled, inside a
// handler called by a [BusHandler] (for its id and timestamp).
func EnvelopeFrom(ctx context.Context) (events.Envelope, bool) {
	env, ok := ctx.Value(envelopeKey{}).(events.Envelope)
	return env, ok
}

// BusHandler is the typed bridge from a Subscriber to an eventbus: it
// decodes each delivery with package events and publishes the typed event on
// bus, so that a consuming service writes
//
//	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error { ... })
//
// and nothing broker-specific. A body that does not decode (unknown name,
// malformed JSON, invalid event) is an error matching [ErrInvalid]: the
// subscriber dead-letters it at once with the decoding error as the reason.
// A failing bus handler makes the delivery fail, so it is retried.
func BusHandler(bus *eventbus.Bus, opts ...BusHandlerOption) Handler {
	h := &busHandler{bus: bus}
	for _, o := range opts {
		if o != nil {
			o(h)
		}
	}
	return h.handle
}

func (h *busHandler) handle(ctx context.Context, d Delivery) error {
	var env events.Envelope
	var err error
	if h.reg != nil {
		env, err = h.reg.Decode(d.Body)
	} else {
		env, err = events.Decode(d.Body)
	}
	if err != nil {
		return &Error{Op: "decode " + d.Source, Kind: ErrInvalid, Err: err}
	}
	if h.dedup != nil && h.dedup.Seen(env.ID) {
		return nil
	}
	if err := eventbus.Publish(context.WithValue(ctx, envelopeKey{}, env), h.bus, env.Data); err != nil {
		return fmt.Errorf("event %s %s: %w", env.Name, env.ID, err)
	}
	if h.dedup != nil {
		h.dedup.Mark(env.ID)
	}
	return nil
}

// Dedup remembers recently handled event ids, to skip redeliveries (delivery
// is at least once). It is per process and in memory: bounded to the size
// most recent ids, each forgotten after ttl. Duplicates across processes or
// restarts need a shared store (e.g. a unique key in the service's
// database). Safe for concurrent use.
type Dedup struct {
	mu    sync.Mutex
	size  int
	ttl   time.Duration
	order *list.List // front = most recent; values are dedupEntry
	items map[string]*list.Element
	now   func() time.Time
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
