package broker

import (
	"context"
	"fmt"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Forwarder is the bridge from the in-process bus to a Broker (the seed's
// "event broker integration"): it wraps each event in an envelope, encodes it
// and publishes it. It is safe for concurrent use.
type Forwarder struct {
	broker  Broker
	stamper events.Stamper
}

// ForwarderOption configures a [Forwarder].
type ForwarderOption func(*Forwarder)

// WithStamper sets how envelopes get their id and timestamp. Default: the
// zero [events.Stamper] (random UUID, current UTC time).
func WithStamper(s events.Stamper) ForwarderOption {
	return func(f *Forwarder) { f.stamper = s }
}

// NewForwarder returns a Forwarder that publishes through b. A nil b is an
// error matching [ErrInvalid].
func NewForwarder(b Broker, opts ...ForwarderOption) (*Forwarder, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: NewForwarder: broker is nil", ErrInvalid)
	}
	f := &Forwarder{broker: b}
	for _, o := range opts {
		o(f)
	}
	return f, nil
}

// MessageFor builds the broker message for an envelope and its encoded body.
func MessageFor(env events.Envelope, body []byte) Message {
	return Message{
		ID:          env.ID,
		Name:        env.Name,
		Key:         env.Data.AggregateID(),
		Body:        body,
		ContentType: ContentTypeJSON,
		Time:        env.Timestamp,
	}
}

// Forward stamps e with a fresh id and time, encodes it and publishes it,
// returning once the broker durably accepted it (see [Broker]). An invalid
// event fails before anything is sent, with an error matching
// events.ErrInvalid that names the field. Errors name the event and its id.
func (f *Forwarder) Forward(ctx context.Context, e events.Event) error {
	env := f.stamper.Stamp(e)
	body, err := events.Encode(env)
	if err != nil {
		return err
	}
	if err := f.broker.Publish(ctx, MessageFor(env, body)); err != nil {
		return fmt.Errorf("forward %s %s: %w", env.Name, env.ID, err)
	}
	return nil
}

// Attach subscribes the forwarder to every event on bus. A publish on the bus
// then returns the broker's error, never swallows it. Events that are not
// events.Event (no aggregate id, no validation) are an error too.
// Unsubscribe the returned subscription to detach.
func (f *Forwarder) Attach(bus *eventbus.Bus) *eventbus.Subscription {
	return eventbus.SubscribeAll(bus, f.handle)
}

func (f *Forwarder) handle(ctx context.Context, e eventbus.Event) error {
	ev, ok := e.(events.Event)
	if !ok {
		return fmt.Errorf("%w: event %q (%T) is not an events.Event: it has no AggregateID or Validate", ErrInvalid, e.EventName(), e)
	}
	return f.Forward(ctx, ev)
}
