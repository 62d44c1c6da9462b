package memory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lanes"
)

// HeaderOriginalQueue carries, on a dead letter, the queue whose
// subscriber gave up on the message.
const HeaderOriginalQueue = "x-original-queue"

// queue is what the broker keeps of one queue name, across its
// subscribers. Guarded by the broker's mu.
type queue struct {
	name      string
	settled   map[int]bool // log positions handled or dead-lettered
	delivered map[int]int  // deliveries per log position
	low       int          // the lowest position not settled
	sub       *Subscriber  // the running one, if any

	ok           map[string]broker.Delivery // the delivery whose handler returned nil, by id, until settled
	handled      []broker.Delivery          // in the order they were acknowledged
	nDead        int
	nRetries     int
	nRedelivered int
}

func (q *queue) settle(i int) {
	q.settled[i] = true
	delete(q.delivered, i)
	for q.settled[q.low] {
		delete(q.settled, q.low)
		q.low++
	}
}

// Subscriber consumes one queue of a [Broker]; see the package doc for
// its delivery semantics. It implements broker.Subscriber.
type Subscriber struct {
	b     *Broker
	q     *queue
	opts  subscriberOptions
	lanes *lanes.Dispatcher[int] // the log position of each item
	done  chan struct{}          // closed when the feeder has ended

	// guarded by b.mu
	pos     int           // the next log position to feed
	gone    chan struct{} // closed by Cut: this session's deliveries can no longer be acknowledged
	closing bool
}

// SubscriberOption configures [Broker.Subscribe]. Each option's doc names
// its default.
type SubscriberOption func(*subscriberOptions) error

type subscriberOptions struct {
	concurrency, maxAttempts int
	retryMin, retryMax       time.Duration
	unordered                bool
}

// WithConcurrency sets how many handlers run at once: never two deliveries
// of one key (Message.Key) at once, each key's in publish order, as the
// RabbitMQ subscriber's WithConcurrency. Default 1.
func WithConcurrency(n int) SubscriberOption {
	return func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithConcurrency(%d): must be at least 1", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithMaxAttempts sets how many times a delivery is handled before it is
// dead-lettered (a broker.Permanent error dead-letters it at once).
// Default 5, as the real adapters.
func WithMaxAttempts(n int) SubscriberOption {
	return func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithRetryBackoff sets the wait before a failed delivery is handled
// again: before retry n, a random draw in [0, min(max, first·2^(n-1))]
// (exponential backoff with full jitter), its key waiting meanwhile.
// Default 1ms to 20ms: short, for tests (the real adapters' are 100ms to
// 5s).
func WithRetryBackoff(first, max time.Duration) SubscriberOption {
	return func(o *subscriberOptions) error {
		if first < 0 || max < first {
			return fmt.Errorf("WithRetryBackoff(%v, %v): want 0 <= first <= max", first, max)
		}
		o.retryMin, o.retryMax = first, max
		return nil
	}
}

// WithUnordered lets the handlers take deliveries in any order, keys
// ignored. Default: ordered by key.
func WithUnordered() SubscriberOption {
	return func(o *subscriberOptions) error {
		o.unordered = true
		return nil
	}
}

// Subscribe starts consuming the queue name into h. A queue sees every message
// published to the broker, from the broker's first (as if it had been
// declared before anything was published); its deliveries not yet
// acknowledged when a subscriber closes go to the queue's next
// subscriber. A queue has at most one subscriber at a time. A nil h, an
// empty queue, a queue that has a subscriber or a bad option is an error
// matching broker.ErrInvalid; after Close, broker.ErrClosed.
func (b *Broker) Subscribe(name string, h broker.Handler, opts ...SubscriberOption) (*Subscriber, error) {
	o := subscriberOptions{concurrency: 1, maxAttempts: 5, retryMin: time.Millisecond, retryMax: 20 * time.Millisecond}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, invalid(err)
		}
	}
	switch {
	case h == nil:
		return nil, invalid(errors.New("Subscribe: handler is nil"))
	case name == "":
		return nil, invalid(errors.New("Subscribe: queue is empty"))
	}
	s := &Subscriber{b: b, opts: o, done: make(chan struct{}), gone: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, &broker.Error{Op: "memory: subscribe", Kind: broker.ErrClosed}
	}
	q := b.queues[name]
	if q == nil {
		q = &queue{name: name, settled: map[int]bool{}, delivered: map[int]int{}, ok: map[string]broker.Delivery{}}
		b.queues[name] = q
	}
	if q.sub != nil {
		return nil, invalid(fmt.Errorf("Subscribe: queue %q already has a subscriber", name))
	}
	s.q, s.pos = q, q.low
	var err error
	s.lanes, err = lanes.New(lanes.Config[int]{
		Workers:          o.concurrency,
		MaxAttempts:      o.maxAttempts,
		Backoff:          backoff.Policy{Initial: o.retryMin, Max: o.retryMax},
		Handler:          s.handler(h),
		Logger:           b.log,
		Settle:           s.settle,
		DeadLetter:       s.deadLetter,
		Retrying:         s.retrying,
		DeadLetterFailed: func(*lanes.Item[int], error, time.Duration) {},
	})
	if err != nil {
		return nil, invalid(err)
	}
	q.sub = s
	go s.feed()
	return s, nil
}

func invalid(err error) error {
	return &broker.Error{Op: "memory: options", Kind: broker.ErrInvalid, Err: err}
}

// handler remembers the delivery h handled, for [Subscriber.Handled].
func (s *Subscriber) handler(h broker.Handler) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) error {
		if err := h(ctx, d); err != nil {
			return err
		}
		s.b.mu.Lock()
		s.q.ok[d.ID] = d
		s.b.mu.Unlock()
		return nil
	}
}

// feed hands the log's messages to the lanes in log order, from the
// queue's lowest unsettled position, until Close.
func (s *Subscriber) feed() {
	defer close(s.done)
	b := s.b
	for {
		b.mu.Lock()
		for !s.closing && s.next() >= len(b.msgs) {
			ch := b.changed
			b.mu.Unlock()
			<-ch
			b.mu.Lock()
		}
		if s.closing {
			b.mu.Unlock()
			return
		}
		i := s.next()
		s.pos = i + 1
		s.q.delivered[i]++
		attempt := s.q.delivered[i]
		if attempt > 1 {
			s.q.nRedelivered++
		}
		m := b.msgs[i].Clone()
		gone := s.gone
		b.mu.Unlock()
		key := m.Key
		if key == "" || s.opts.unordered {
			key = "\x00" + strconv.Itoa(i) // its own lane (a real key never starts with NUL)
		}
		d := broker.Delivery{Message: m, Attempt: attempt, Seq: adapter.SeqOf(m.Headers), Source: "memory queue " + s.q.name,
			Origin: broker.Origin{System: "memory", Destination: s.q.name, Partition: -1}}
		if err := s.lanes.Add(context.Background(), lanes.Item[int]{Key: key, Delivery: d, Value: i, Gone: gone}); err != nil {
			return // closing: the queue's next subscriber gets it
		}
	}
}

// next is the first log position from pos not settled. Called with b.mu
// held.
func (s *Subscriber) next() int {
	i := max(s.pos, s.q.low)
	for s.q.settled[i] {
		i++
	}
	return i
}

// settle acknowledges what was handled or dead-lettered; what was
// abandoned stays in the queue, to be delivered again.
func (s *Subscriber) settle(it *lanes.Item[int], o lanes.Outcome) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch o {
	case lanes.Handled:
		if !s.q.settled[it.Value] && it.Value >= s.q.low {
			d, ok := s.q.ok[it.Delivery.ID]
			if !ok {
				d = it.Delivery
			}
			s.q.handled = append(s.q.handled, d)
			s.q.settle(it.Value)
		}
		delete(s.q.ok, it.Delivery.ID)
	case lanes.DeadLettered:
		if !s.q.settled[it.Value] && it.Value >= s.q.low {
			s.q.settle(it.Value)
		}
	default:
		return
	}
	b.notify()
}

// deadLetter stores a dead delivery's copy with the reason headers; the
// lane then acknowledges the original.
func (s *Subscriber) deadLetter(_ context.Context, it *lanes.Item[int], dl broker.DeadLetter, cause error) error {
	m := dl.Annotated()
	m.Headers[HeaderOriginalQueue] = s.q.name
	b := s.b
	b.mu.Lock()
	b.dead = append(b.dead, m)
	s.q.nDead++
	b.notify()
	b.mu.Unlock()
	d := it.Delivery
	b.log.Warn("memory subscriber: delivery dead-lettered", "queue", s.q.name, "id", d.ID, "key", d.Key,
		"attempts", dl.Attempts, "category", dl.Category, "err", cause)
	b.observe(broker.Observation{Kind: broker.ObservedDeadLetter, Component: "memory subscriber", Destination: s.q.name,
		MessageID: d.ID, MessageName: d.Name, Attempt: dl.Attempts, Category: dl.Category, Err: cause})
	return nil
}

// retrying reports a handler failure that will be tried again after wait.
func (s *Subscriber) retrying(it *lanes.Item[int], err error, attempt int, wait time.Duration) {
	d := it.Delivery
	s.b.mu.Lock()
	s.q.nRetries++
	s.b.mu.Unlock()
	s.b.log.Warn("memory subscriber: handler failed, retrying", "queue", s.q.name, "id", d.ID, "key", d.Key,
		"attempt", attempt, "retry_in", wait, "err", err)
	s.b.observe(broker.Observation{Kind: broker.ObservedRetry, Component: "memory subscriber", Destination: s.q.name,
		MessageID: d.ID, MessageName: d.Name, Attempt: attempt, Delay: wait, Value: wait.Seconds(),
		Category: broker.CategoryHandlerFailed, Err: err})
}

// Cut acts as a lost connection would: the deliveries not yet
// acknowledged are delivered again (Attempt one higher), in queue order,
// behind the handler calls running now (which finish; what they handled
// is acknowledged). Tests of at-least-once handling use it; it is the
// conformance suite's CutSubscriber.
func (s *Subscriber) Cut() {
	s.b.mu.Lock()
	if s.closing {
		s.b.mu.Unlock()
		return
	}
	close(s.gone)
	s.gone = make(chan struct{})
	s.pos = s.q.low
	s.b.notify()
	s.b.mu.Unlock()
	s.lanes.Expire()
}

// Close stops feeding the handlers, lets the running ones finish and
// acknowledges what they handled; the deliveries not finished stay in the
// queue for its next subscriber. If ctx ends first, the running handlers'
// ctx is cancelled and Close returns ctx.Err(). A second Close returns nil.
func (s *Subscriber) Close(ctx context.Context) error {
	b := s.b
	b.mu.Lock()
	if s.closing {
		b.mu.Unlock()
		return nil
	}
	s.closing = true
	b.notify()
	b.mu.Unlock()
	err := s.lanes.Close(ctx)
	<-s.done // the feeder ends at once: Add returns ErrClosed, its wait sees closing
	b.mu.Lock()
	if s.q.sub == s {
		s.q.sub = nil
	}
	b.notify()
	b.mu.Unlock()
	return err
}
