package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// HandlerOption configures [NewHandler]. Each option's doc names its default.
type HandlerOption func(*busHandler) error

type busHandler struct {
	bus   *eventbus.Bus
	reg   *events.Registry
	dedup *Dedup
}

// WithRegistry decodes with reg: register your own event types in it
// (events.Register). Default: events.NewRegistry(), the order events.
func WithRegistry(reg *events.Registry) HandlerOption {
	return func(h *busHandler) error {
		if reg == nil {
			return errors.New("WithRegistry: registry is nil")
		}
		h.reg = reg
		return nil
	}
}

// WithDedup skips deliveries whose event id d has seen handled. Default:
// none (every redelivery is handled again).
func WithDedup(d *Dedup) HandlerOption {
	return func(h *busHandler) error {
		if d == nil {
			return errors.New("WithDedup: dedup is nil")
		}
		h.dedup = d
		return nil
	}
}

type envelopeKey struct{}

// EnvelopeFrom returns the envelope of the event being handled, inside a bus
// handler called through [NewHandler] (for its id and timestamp).
func EnvelopeFrom(ctx context.Context) (events.Envelope, bool) {
	env, ok := ctx.Value(envelopeKey{}).(events.Envelope)
	return env, ok
}

// NewHandler returns the typed bridge from a subscriber to an eventbus, a
// broker.Handler: it decodes each delivery with the registry and publishes
// the typed event on bus, so that a consuming service writes
//
//	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error { ... })
//
// and nothing broker-specific. A CloudEvent in binary mode from another
// producer, whose body is the event's data rather than this library's
// envelope, decodes too: its type is the event name, its id and time the
// envelope's (docs/cloudevents.md). A body that does not decode (malformed JSON,
// an event name the registry does not know, an invalid event) is an error
// matching broker.ErrInvalid: the subscriber dead-letters it at once, as
// poison, with the decoding error as the reason. A failing bus handler
// makes the delivery fail, so it is retried. A nil bus or a bad option is
// an error matching broker.ErrInvalid.
func NewHandler(bus *eventbus.Bus, opts ...HandlerOption) (broker.Handler, error) {
	if bus == nil {
		return nil, invalid("NewHandler: bus is nil")
	}
	h := &busHandler{bus: bus}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(h); err != nil {
			return nil, invalid(err.Error())
		}
	}
	if h.reg == nil {
		h.reg = events.NewRegistry()
	}
	return h.handle, nil
}

func (h *busHandler) handle(ctx context.Context, d broker.Delivery) error {
	env, err := h.reg.Decode(d.Body)
	if err != nil && errors.Is(err, events.ErrMalformed) && broker.IsCloudEvent(d.Headers) {
		env, err = h.decodeCloudEvent(d)
	}
	if err != nil {
		return &broker.Error{Op: "bridge: decode", Kind: broker.ErrInvalid, Err: fmt.Errorf("delivery %s from %s: %w", d.ID, d.Source, err)}
	}
	if h.dedup != nil && h.dedup.Seen(env.ID) {
		h.dedup.skipped.Add(1)
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

// decodeCloudEvent decodes a CloudEvent in binary mode whose body is its
// data alone (another producer's; this library's carry the envelope):
// the envelope is made from the delivery, which the subscriber filled from
// the attributes (name = type, id = id, timestamp = time, or now when the
// event has none), around the body as data. The data must be JSON.
func (h *busHandler) decodeCloudEvent(d broker.Delivery) (events.Envelope, error) {
	if ct := d.ContentType; ct != "" && !strings.Contains(ct, "json") {
		return events.Envelope{}, fmt.Errorf("%w: CloudEvent %s: data of content type %q is not JSON", events.ErrMalformed, d.ID, ct)
	}
	if !json.Valid(d.Body) {
		return events.Envelope{}, fmt.Errorf("%w: CloudEvent %s: data is not JSON", events.ErrMalformed, d.ID)
	}
	ts := d.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	body, err := json.Marshal(struct {
		Name      string          `json:"name"`
		ID        string          `json:"id"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{d.Name, d.ID, ts.UTC().Format(time.RFC3339Nano), d.Body})
	if err != nil {
		return events.Envelope{}, fmt.Errorf("%w: CloudEvent %s: %v", events.ErrMalformed, d.ID, err)
	}
	return h.reg.Decode(body)
}
