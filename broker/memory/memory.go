package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/domainevents/domainevents/broker"
)

// component names this package in logs.
const component = "memory broker"

// Broker is an in-memory [broker.Broker]: Publish appends a copy of the
// message to the broker's log, which every queue reads (see the package
// doc). Safe for concurrent use.
type Broker struct {
	log *slog.Logger
	obs broker.Observer

	mu      sync.Mutex
	msgs    []broker.Message
	queues  map[string]*queue
	dead    []broker.Message // dead letters, annotated, of every queue
	changed chan struct{}    // closed (and replaced) on every change, for the waits
	closed  bool
}

// Option configures [New]. Each option's doc names its default.
type Option func(*Broker) error

// WithLogger sets where the broker and its subscribers log (retries and
// dead letters at Warn, a panicking handler's stack at Error). Default
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(b *Broker) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		b.log = l
		return nil
	}
}

// WithObserver reports the subscribers' retries and dead letters to o
// (broker.ObservedRetry, broker.ObservedDeadLetter, System "memory").
// Default: none.
func WithObserver(o broker.Observer) Option {
	return func(b *Broker) error {
		if o == nil {
			return errors.New("WithObserver: observer is nil")
		}
		b.obs = o
		return nil
	}
}

// New returns an empty broker. A nil option is skipped; a bad one is an
// error matching broker.ErrInvalid that names it.
func New(opts ...Option) (*Broker, error) {
	b := &Broker{log: slog.Default(), queues: map[string]*queue{}, changed: make(chan struct{})}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(b); err != nil {
			return nil, &broker.Error{Op: "memory: options", Kind: broker.ErrInvalid, Err: err}
		}
	}
	b.log = b.log.With("component", component)
	return b, nil
}

// Publish validates msg and appends a copy of it to the log, where every
// queue's subscriber finds it; it returns once the copy is there (the
// broker's "confirm"). A done ctx returns ctx.Err(), an invalid message an
// error matching broker.ErrInvalid, a publish after Close broker.ErrClosed.
// Publish does not keep msg.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	m := msg.Clone()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &broker.Error{Op: "memory: publish", Kind: broker.ErrClosed}
	}
	b.msgs = append(b.msgs, m)
	b.notify()
	return nil
}

// Messages returns copies of every message published, in publish order.
func (b *Broker) Messages() []broker.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]broker.Message, len(b.msgs))
	for i, m := range b.msgs {
		out[i] = m.Clone()
	}
	return out
}

// DeadLetters returns copies of the dead letters of every queue, in the
// order they were dead-lettered: each the original message with the
// broker.HeaderDeadLetter* reason headers (broker.DeadLetter.Annotated)
// and [HeaderOriginalQueue].
func (b *Broker) DeadLetters() []broker.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]broker.Message, len(b.dead))
	for i, m := range b.dead {
		out[i] = m.Clone()
	}
	return out
}

// Close stops accepting publishes (broker.ErrClosed after), then closes
// every subscriber still running, as [Subscriber.Close] does, within ctx:
// their running handlers finish and are acknowledged. It returns the
// subscribers' errors joined (ctx.Err() if ctx ended first). A second
// Close returns nil.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	var subs []*Subscriber
	for _, q := range b.queues {
		if q.sub != nil {
			subs = append(subs, q.sub)
		}
	}
	b.notify()
	b.mu.Unlock()
	var errs []error
	for _, s := range subs {
		errs = append(errs, s.Close(ctx))
	}
	return errors.Join(errs...)
}

// notify wakes whoever waits for a change. Called with mu held.
func (b *Broker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait calls cond with mu held until it returns true, waking on every
// change, or until ctx ends: then the error says what was waited for
// (what(), with mu held) and wraps ctx.Err().
func (b *Broker) wait(ctx context.Context, cond func() bool, what func() string) error {
	b.mu.Lock()
	for !cond() {
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			b.mu.Lock()
			w := what()
			b.mu.Unlock()
			return fmt.Errorf("memory: waiting for %s: %w", w, ctx.Err())
		}
		b.mu.Lock()
	}
	b.mu.Unlock()
	return nil
}

func (b *Broker) observe(o broker.Observation) {
	if b.obs != nil {
		o.System = "memory"
		b.obs.Observe(context.Background(), o)
	}
}
