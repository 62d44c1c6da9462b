package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Forwarder is the bridge from the in-process bus to a Broker (the seed's
// "event broker integration"): it wraps each event in an envelope, encodes it
// and publishes it. It is safe for concurrent use.
//
// By default it is synchronous: Forward (and so eventbus.Publish) returns the
// broker's answer. With [WithAsync] it hands events to a bounded queue that
// workers drain, so that a burst of events pipelines on the connection.
type Forwarder struct {
	broker  Broker
	stamper events.Stamper
	async   *asyncForwarder
}

// ForwarderOption configures a [Forwarder].
type ForwarderOption func(*Forwarder) error

// WithStamper sets how envelopes get their id and timestamp. Default: the
// zero [events.Stamper] (random UUID, current UTC time).
func WithStamper(s events.Stamper) ForwarderOption {
	return func(f *Forwarder) error {
		f.stamper = s
		return nil
	}
}

// AsyncOptions configures [WithAsync]. Zero fields take their defaults.
type AsyncOptions struct {
	// Queue bounds the events waiting for a worker. When it is full, Forward
	// blocks until there is room or its ctx ends (then the event is not
	// accepted and Forward says so); nothing is ever dropped. Default 1024.
	Queue int
	// Workers publish concurrently. Default 16.
	Workers int
	// PublishTimeout bounds each worker's publish. Default 30s.
	PublishTimeout time.Duration
	// DeadLetter takes the events whose publish failed and that the broker
	// (e.g. a retry.Broker with its own sink) did not already dead-letter,
	// and those still queued when Close gives up. Default: none; such events
	// are only reported to OnError and counted as Failed.
	DeadLetter DeadLetterSink
	// OnError is called for every event whose publish failed, after the
	// dead-lettering. Default: log at Error with slog.Default().
	OnError func(Message, error)
}

// WithAsync makes Forward enqueue the event and return once it is queued
// (validation errors still come back at once). Workers publish the queue;
// failures go to AsyncOptions.DeadLetter and OnError, since the caller has
// moved on. Close drains the queue. Default: synchronous.
func WithAsync(o AsyncOptions) ForwarderOption {
	return func(f *Forwarder) error {
		if o.Queue < 0 || o.Workers < 0 || o.PublishTimeout < 0 {
			return fmt.Errorf("WithAsync: negative Queue, Workers or PublishTimeout")
		}
		if o.Queue == 0 {
			o.Queue = 1024
		}
		if o.Workers == 0 {
			o.Workers = 16
		}
		if o.PublishTimeout == 0 {
			o.PublishTimeout = 30 * time.Second
		}
		if o.OnError == nil {
			o.OnError = func(m Message, err error) {
				slog.Default().Error("forwarder: event not published", "id", m.ID, "name", m.Name, "err", err)
			}
		}
		f.async = &asyncForwarder{opts: o, queue: make(chan Message, o.Queue), closing: make(chan struct{})}
		return nil
	}
}

// NewForwarder returns a Forwarder that publishes through b. A nil b or a
// bad option is an error matching [ErrInvalid].
func NewForwarder(b Broker, opts ...ForwarderOption) (*Forwarder, error) {
	if b == nil {
		return nil, &configError{"NewForwarder: broker is nil"}
	}
	f := &Forwarder{broker: b}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(f); err != nil {
			return nil, &configError{err.Error()}
		}
	}
	if f.async != nil {
		f.async.start(b)
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

// Forward stamps e with a fresh id and time and encodes it; an invalid event
// fails here, with an error matching events.ErrInvalid that names the field.
// Synchronous: it then publishes and returns once the broker durably accepted
// the event (see [Broker]). Asynchronous: it returns once the event is
// queued. Errors name the event and its id.
func (f *Forwarder) Forward(ctx context.Context, e events.Event) error {
	env := f.stamper.Stamp(e)
	body, err := events.Encode(env)
	if err != nil {
		return err
	}
	m := MessageFor(env, body)
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

// Attach subscribes the forwarder to every event on bus. A publish on the bus
// then returns the forwarder's error, never swallows it. Events that are not
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

// ForwarderStats counts an asynchronous forwarder's events. Once Close
// returned, Enqueued = Published + DeadLettered + Failed.
type ForwarderStats struct {
	Enqueued     int64
	Published    int64
	DeadLettered int64
	Failed       int64
}

// Stats returns the counters (all zero for a synchronous forwarder).
func (f *Forwarder) Stats() ForwarderStats {
	if f.async == nil {
		return ForwarderStats{}
	}
	a := f.async
	return ForwarderStats{Enqueued: a.enqueued.Load(), Published: a.published.Load(),
		DeadLettered: a.deadLettered.Load(), Failed: a.failed.Load()}
}

// Close stops accepting events (Forward then returns [ErrClosed]) and, when
// asynchronous, waits until the workers have published the queue. If ctx ends
// first, the publishes in progress are cancelled and every event still
// queued goes to AsyncOptions.DeadLetter (or OnError), and Close returns
// ctx.Err(); [Forwarder.Stats] then says where each event went. It does not
// close the Broker: close that after the forwarder. A second Close returns
// nil.
func (f *Forwarder) Close(ctx context.Context) error {
	if f.async == nil {
		return nil
	}
	return f.async.close(ctx)
}

type asyncForwarder struct {
	opts    AsyncOptions
	queue   chan Message
	closing chan struct{}
	work    context.Context
	stop    context.CancelFunc
	workers sync.WaitGroup
	mu      sync.RWMutex // guards closed against enqueue's check
	closed  bool
	sending sync.WaitGroup // enqueue calls that may still send on queue
	once    sync.Once

	enqueued, published, deadLettered, failed atomic.Int64
}

func (a *asyncForwarder) start(b Broker) {
	a.work, a.stop = context.WithCancel(context.Background())
	for range a.opts.Workers {
		a.workers.Go(func() {
			for m := range a.queue {
				a.publish(b, m)
			}
		})
	}
}

func (a *asyncForwarder) enqueue(ctx context.Context, m Message) error {
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return &Error{Op: "forwarder", Kind: ErrClosed}
	}
	a.sending.Add(1)
	a.mu.RUnlock()
	defer a.sending.Done()
	select {
	case a.queue <- m:
		a.enqueued.Add(1)
		return nil
	case <-a.closing:
		return &Error{Op: "forwarder", Kind: ErrClosed}
	case <-ctx.Done():
		return fmt.Errorf("forwarder queue full (%d events), event not accepted: %w", cap(a.queue), ctx.Err())
	}
}

func (a *asyncForwarder) publish(b Broker, m Message) {
	ctx, cancel := context.WithTimeout(a.work, a.opts.PublishTimeout)
	start := time.Now()
	err := b.Publish(ctx, m)
	cancel()
	if err == nil {
		a.published.Add(1)
		return
	}
	if !errors.Is(err, ErrDeadLettered) && a.opts.DeadLetter != nil {
		now := time.Now()
		d := DeadLetter{Message: m, Reason: err.Error(), Category: Category(err), Attempts: 1, FirstFailure: start, LastFailure: now}
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		if perr := a.opts.DeadLetter.Put(sctx, d); perr == nil {
			err = &Error{Op: "forwarder", Kind: ErrDeadLettered, Err: err}
		} else {
			err = errors.Join(err, fmt.Errorf("dead-lettering failed: %w", perr))
		}
		scancel()
	}
	if errors.Is(err, ErrDeadLettered) {
		a.deadLettered.Add(1)
	} else {
		a.failed.Add(1)
	}
	a.opts.OnError(m, err)
}

func (a *asyncForwarder) close(ctx context.Context) error {
	first := false
	a.once.Do(func() { first = true })
	if !first {
		return nil
	}
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	close(a.closing)
	a.sending.Wait() // no enqueue can send on the queue any more
	close(a.queue)   // workers drain what is left, then stop

	done := make(chan struct{})
	go func() {
		a.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		a.stop() // publishes fail fast now: the rest is dead-lettered
		<-done
	}
	a.stop()
	st := ForwarderStats{Enqueued: a.enqueued.Load(), Published: a.published.Load(),
		DeadLettered: a.deadLettered.Load(), Failed: a.failed.Load()}
	slog.Default().Info("forwarder: closed", "enqueued", st.Enqueued, "published", st.Published,
		"dead_lettered", st.DeadLettered, "failed", st.Failed)
	return err
}
