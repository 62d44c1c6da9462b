package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Forwarder carries events from the in-process bus to a [broker.Broker]: it
// wraps each event in an envelope, encodes it and publishes it. It is safe
// for concurrent use.
//
// By default it is synchronous: Forward (and so eventbus.Publish) returns the
// broker's answer. With [WithAsync] it hands events to bounded per-key lanes
// that workers drain, so that a burst of events pipelines on the connection
// while one aggregate's events keep their order.
type Forwarder struct {
	broker  broker.Broker
	stamper events.Stamper
	hook    func(context.Context, *broker.Message)
	async   *asyncForwarder
}

// Option configures [NewForwarder]. Each option's doc names its default.
type Option func(*forwarderConfig) error

type forwarderConfig struct {
	stamper events.Stamper
	async   *asyncConfig // nil: synchronous
	// Set by the async-only options, checked against async.
	asyncOnly []string
	timeout   time.Duration
	sink      broker.DeadLetterSink
	onError   func(broker.Message, error)
	hook      func(context.Context, *broker.Message)
	logger    *slog.Logger
}

type asyncConfig struct{ workers, queue int }

// WithStamper sets how envelopes get their id and timestamp. Default: the
// zero [events.Stamper] (random UUID, current UTC time).
func WithStamper(s events.Stamper) Option {
	return func(c *forwarderConfig) error {
		c.stamper = s
		return nil
	}
}

// WithAsync makes Forward enqueue the event and return once it is queued
// (validation errors still come back at once). workers publish
// concurrently (0: 16); events with the same aggregate key (the order id)
// always go to the same worker, in the order Forward was called, so they
// reach the broker in that order. queue bounds the events waiting (0: 1024,
// shared evenly by the workers' lanes): when an event's lane is full,
// Forward blocks until there is room or its ctx ends (then the event is not
// accepted and Forward says so); nothing is ever dropped. Failures go to
// [WithDeadLetter] and [WithOnError], since the caller has moved on; Close
// drains the lanes. Default: synchronous.
func WithAsync(workers, queue int) Option {
	return func(c *forwarderConfig) error {
		if workers < 0 || queue < 0 {
			return fmt.Errorf("WithAsync(%d, %d): workers and queue must not be negative", workers, queue)
		}
		if workers == 0 {
			workers = 16
		}
		if queue == 0 {
			queue = 1024
		}
		c.async = &asyncConfig{workers: workers, queue: queue}
		return nil
	}
}

// WithPublishTimeout bounds each asynchronous publish. Only with
// [WithAsync]. Default 30s.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *forwarderConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithPublishTimeout(%v): must be positive", d)
		}
		c.timeout = d
		c.asyncOnly = append(c.asyncOnly, "WithPublishTimeout")
		return nil
	}
}

// WithDeadLetter stores in sink the asynchronous events whose publish
// failed and that the broker (a retry.Broker with its own sink, say) did
// not already dead-letter, and those still queued when Close gives up.
// Only with [WithAsync]. Default: none; such events are only reported to
// [WithOnError] and counted as Failed.
func WithDeadLetter(sink broker.DeadLetterSink) Option {
	return func(c *forwarderConfig) error {
		if sink == nil {
			return errors.New("WithDeadLetter: sink is nil")
		}
		c.sink = sink
		c.asyncOnly = append(c.asyncOnly, "WithDeadLetter")
		return nil
	}
}

// WithOnError is called for every asynchronous event whose publish failed,
// after the dead-lettering, from a worker (keep it fast). Only with
// [WithAsync]. Default: log at Error through [WithLogger]'s logger.
func WithOnError(fn func(broker.Message, error)) Option {
	return func(c *forwarderConfig) error {
		if fn == nil {
			return errors.New("WithOnError: fn is nil")
		}
		c.onError = fn
		c.asyncOnly = append(c.asyncOnly, "WithOnError")
		return nil
	}
}

// WithMessageHook calls fn with each event's message, in Forward's
// goroutine and with its ctx, before the message is published or queued:
// what fn writes into m.Headers travels with the event through the queue
// of [WithAsync], the broker's retries and any dead-letter spool. The
// OpenTelemetry module's MessageHook writes the caller's trace context
// there. fn gets a message of its own (m.Headers may be nil; set a new map
// then). Default: none.
func WithMessageHook(fn func(ctx context.Context, m *broker.Message)) Option {
	return func(c *forwarderConfig) error {
		if fn == nil {
			return errors.New("WithMessageHook: fn is nil")
		}
		c.hook = fn
		return nil
	}
}

// WithLogger sets the logger of the asynchronous forwarder (events not
// published, the summary at Close); every line carries the attribute
// component="bridge forwarder". Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *forwarderConfig) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		c.logger = l
		return nil
	}
}

// NewForwarder returns a Forwarder that publishes through b. A nil b or a
// bad option (an async-only option without [WithAsync] included) is an
// error matching broker.ErrInvalid.
func NewForwarder(b broker.Broker, opts ...Option) (*Forwarder, error) {
	if b == nil {
		return nil, invalid("NewForwarder: broker is nil")
	}
	c := forwarderConfig{timeout: 30 * time.Second, logger: slog.Default()}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, invalid(err.Error())
		}
	}
	if c.async == nil && len(c.asyncOnly) > 0 {
		return nil, invalid(fmt.Sprintf("NewForwarder: %v only apply with WithAsync", c.asyncOnly))
	}
	f := &Forwarder{broker: b, stamper: c.stamper, hook: c.hook}
	if c.async != nil {
		log := c.logger.With("component", "bridge forwarder")
		if c.onError == nil {
			c.onError = func(m broker.Message, err error) {
				log.Error("bridge forwarder: event not published", "id", m.ID, "name", m.Name, "key", m.Key, "err", err)
			}
		}
		f.async = newAsync(b, *c.async, c.timeout, c.sink, c.onError, log)
	}
	return f, nil
}

// MessageFor encodes env (validating it: an invalid event is an error
// matching events.ErrInvalid that names the field) and returns the broker
// message for it: ID and Name from the envelope, Key the aggregate id,
// Body the JSON envelope, ContentType application/json, Time the envelope's
// timestamp.
func MessageFor(env events.Envelope) (broker.Message, error) {
	body, err := events.Encode(env)
	if err != nil {
		return broker.Message{}, err
	}
	return broker.Message{
		ID:          env.ID,
		Name:        env.Name,
		Key:         env.Data.AggregateID(),
		Body:        body,
		ContentType: broker.ContentTypeJSON,
		Time:        env.Timestamp,
	}, nil
}

// Forward stamps e with a fresh id and time and encodes it; an invalid event
// fails here, with an error matching events.ErrInvalid that names the field.
// Synchronous: it then publishes and returns once the broker durably
// accepted the event (see broker.Broker). Asynchronous: it returns once the
// event is queued. Errors name the event and its id.
func (f *Forwarder) Forward(ctx context.Context, e events.Event) error {
	env := f.stamper.Stamp(e)
	m, err := MessageFor(env)
	if err != nil {
		return err
	}
	if f.hook != nil {
		f.hook(ctx, &m)
	}
	if f.async != nil {
		err = f.async.enqueue(ctx, m)
	} else {
		err = f.broker.Publish(ctx, m)
	}
	if err != nil {
		return fmt.Errorf("forward %s %s: %w", env.Name, env.ID, err)
	}
	return nil
}

// Attach subscribes the forwarder to every event on bus, under the handler
// name "broker forwarder". A publish on the bus then returns the
// forwarder's error, never swallows it. Events that are not events.Event
// (no aggregate id, no validation) are an error too. Unsubscribe the
// returned subscription to detach.
func (f *Forwarder) Attach(bus *eventbus.Bus) *eventbus.Subscription {
	return eventbus.SubscribeAll(bus, f.handle, eventbus.Named("broker forwarder"))
}

func (f *Forwarder) handle(ctx context.Context, e eventbus.Event) error {
	ev, ok := e.(events.Event)
	if !ok {
		return fmt.Errorf("%w: event %q (%T) is not an events.Event: it has no AggregateID or Validate", broker.ErrInvalid, e.EventName(), e)
	}
	return f.Forward(ctx, ev)
}

// Stats counts an asynchronous forwarder's events. Once Close returned,
// Enqueued = Published + DeadLettered + Failed.
type Stats struct {
	// Enqueued counts the events Forward accepted into the queue.
	Enqueued int64
	// Published counts those the broker accepted.
	Published int64
	// DeadLettered counts those that failed and are safe in a dead-letter
	// sink (the spool).
	DeadLettered int64
	// Failed counts those that failed and could not be dead-lettered
	// either; each was logged with its error.
	Failed int64
}

// Stats returns the counters (all zero for a synchronous forwarder).
func (f *Forwarder) Stats() Stats {
	if f.async == nil {
		return Stats{}
	}
	return f.async.stats()
}

// Close stops accepting events (Forward then returns broker.ErrClosed) and,
// when asynchronous, waits until the workers have published what is
// queued. When ctx is close to its end (a quarter of its time left, at most
// the last second), the publishes in progress are cancelled and every
// event still queued goes to the [WithDeadLetter] sink (or [WithOnError])
// in the time left, and Close returns an error matching
// context.DeadlineExceeded; [Forwarder.Stats] then says where each event
// went. It does not close the Broker: close that after the forwarder. A
// second Close returns nil.
func (f *Forwarder) Close(ctx context.Context) error {
	if f.async == nil {
		return nil
	}
	return f.async.close(ctx)
}

// invalid is a bad argument or option: it matches broker.ErrInvalid.
func invalid(msg string) error {
	return &broker.Error{Op: "bridge: setup", Kind: broker.ErrInvalid, Err: errors.New(msg)}
}
