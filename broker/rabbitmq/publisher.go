package rabbitmq

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
)

// Broker publishes to a RabbitMQ topic exchange with publisher confirms. It
// implements broker.Broker and broker.HealthChecker; see the package doc
// for the guarantees.
//
// Inside: Publish queues a record and waits for its outcome; one writer
// goroutine writes queued records, in order, to the current session (a
// confirm-mode channel); each session's watcher resolves its confirms and,
// when the channel closes, hands its unconfirmed records back to the front
// of the queue; the supervisor opens a new session. Lock order: Broker.mu,
// then session.mu. Every goroutine is joined by Close.
type Broker struct {
	exchange exchangeSpec // where it publishes, declared on every session
	opts     publisherOptions
	conn     *connector
	log      *slog.Logger
	window   chan struct{} // a token per record between acceptance and outcome
	maxSize  atomic.Int64  // bodies above it fail at once: the option, or what the server said

	kick    chan struct{} // (buffered 1) wakes the writer
	lost    chan struct{} // (buffered 1) wakes the supervisor: no session
	closing chan struct{} // closed when Close starts: waiting publishes give up
	stopped chan struct{} // closed when Close stops the goroutines
	wg      sync.WaitGroup

	mu       sync.Mutex
	state    state
	sess     *session  // the current session; nil while there is none
	last     *session  // the last session lost, whose connection may be reused
	queue    []*record // accepted, waiting for a session, in publish order
	lastErr  error     // why the last connection attempt or session failed
	blocked  string    // the broker's reason while it blocks publishing
	sessions uint64    // sessions opened, for their ids

	stats struct {
		published, confirmed, republished, returned, nacked, reconnects atomic.Int64
	}
}

// state is the one lifecycle field: open → closing (Close waits for the
// records in flight) → closed (nothing runs any more).
type state int

const (
	stateOpen state = iota
	stateClosing
	stateClosed
)

// New connects to RabbitMQ as cfg says, declares the topology (a durable
// topic exchange named cfg.Exchange, plus what the options add) and returns
// a Broker ready to publish. ctx bounds connecting only; it is not kept.
//
// A bad configuration or option, bad credentials, a missing vhost or an
// exchange that exists with another type is a non-retryable error
// (broker.ErrInvalid or broker.ErrUnauthorized). When no address answers
// before ctx ends or each has been tried once, the error matches
// broker.ErrUnavailable. With [WithLazyConnect], New returns at once and
// connects in the background.
func New(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*Broker, error) {
	cfg, o, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	return start(ctx, "rabbitmq publisher", cfg, destination(cfg.Exchange, &o.conn), o)
}

// start makes and starts a Broker publishing to exchange (named "": the
// default exchange, never declared).
func start(ctx context.Context, component string, cfg broker.Config, exchange exchangeSpec, o publisherOptions) (*Broker, error) {
	b := &Broker{
		exchange: exchange,
		opts:     o,
		log:      o.conn.logger,
		window:   make(chan struct{}, o.window),
		kick:     make(chan struct{}, 1),
		lost:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	b.conn = newConnector(component, cfg, &b.opts.conn)
	b.maxSize.Store(int64(o.maxMessageSize))
	if !o.conn.lazy {
		err := b.conn.eachOnce(ctx, func(ctx context.Context) error {
			s, err := b.connectSession(ctx)
			if err == nil {
				b.install(s, 1)
			}
			return err
		})
		if err != nil {
			b.conn.stop()
			b.wg.Wait()
			return nil, err
		}
	} else {
		b.lost <- struct{}{}
	}
	b.wg.Add(2)
	go b.supervise()
	go b.writeLoop()
	return b, nil
}

// install makes s the current session and starts its watcher; the writer
// then re-sends what waits in the queue, in order, with the same ids.
func (b *Broker) install(s *session, attempt int) {
	b.mu.Lock()
	if b.state == stateClosed {
		b.mu.Unlock()
		b.kill(s.conn)
		return
	}
	b.sess = s
	b.lastErr = nil
	waiting := len(b.queue)
	b.mu.Unlock()
	b.wg.Add(1)
	go b.watch(s)
	b.kickWriter()
	b.log.Info("rabbitmq publisher: connected", "component", b.conn.component, "addr", s.addr,
		"exchange", b.exchange.name, "session", s.id, "waiting", waiting)
	b.conn.observe(broker.Observation{Kind: broker.ObservedConnected, Address: s.addr, Destination: b.exchange.name, Attempt: attempt})
}

// supervise opens a new session after each loss, until Close: on the same
// connection when only the channel closed (the broker refused a message),
// otherwise on a new connection, trying the addresses in turn with backoff.
func (b *Broker) supervise() {
	defer b.wg.Done()
	for {
		select {
		case <-b.lost:
		case <-b.stopped:
			return
		}
		b.mu.Lock()
		prev := b.last
		b.mu.Unlock()
		ok := b.conn.retry(b.stopped, "connect", func(attempt int) error {
			if prev != nil && attempt == 1 && !prev.conn.IsClosed() {
				s, err := b.openSession(prev.conn, prev.addr, prev.blocked)
				if err == nil {
					b.install(s, attempt)
					return nil
				}
				b.kill(prev.conn)
			}
			s, err := b.connectSession(b.conn.life)
			if err != nil {
				b.mu.Lock()
				b.lastErr = err
				b.mu.Unlock()
				return err
			}
			b.stats.reconnects.Add(1)
			b.install(s, attempt)
			return nil
		})
		if !ok {
			return
		}
	}
}

// Publish sends msg to the exchange with routing key msg.Name and waits for
// the broker's confirm. See the package doc for the mapping and guarantees.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	return b.publish(ctx, msg.Name, msg)
}

// publish is Publish with an explicit routing key (the subscriber's
// retries go to a queue through the default exchange).
func (b *Broker) publish(ctx context.Context, key string, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	if err := shortStrings(key, msg); err != nil {
		return err
	}
	if limit := b.maxSize.Load(); int64(len(msg.Body)) > limit {
		return &broker.Error{Op: opPublish, Kind: broker.ErrTooLarge,
			Err: fmt.Errorf("message %s: body is %d bytes, the limit is %d (WithMaxMessageSize, or the server's max_message_size)", msg.ID, len(msg.Body), limit)}
	}
	r := newRecord(key, msg, b.opts.ceSource)
	select {
	case b.window <- struct{}{}:
	case <-b.closing:
		return errClosed
	case <-ctx.Done():
		return b.notSentErr(ctx, msg.ID, "every slot of the window is in flight (WithWindow)")
	}
	b.mu.Lock()
	if b.state != stateOpen {
		b.mu.Unlock()
		<-b.window
		return errClosed
	}
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	b.stats.published.Add(1)
	b.kickWriter()

	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
	}
	select {
	case <-r.done: // the outcome arrived as ctx ended: report it
		return r.err
	default:
	}
	if b.withdraw(r) {
		return b.notSentErr(ctx, msg.ID, "")
	}
	return b.unknownErr(ctx, msg.ID)
}

// maxShortString is the longest AMQP short string: the routing key,
// message id, type, content type and header names travel as such.
const maxShortString = 255

// shortStrings refuses a message whose routing key, id, type, content
// type or a header name is longer than an AMQP short string. amqp091
// fails such a write without saying which message was at fault; the
// writer would take it for a broken connection and write it again after
// every reconnect, holding up every message behind it.
func shortStrings(key string, msg broker.Message) error {
	for _, f := range []struct{ what, v string }{{"routing key", key}, {"ID", msg.ID}, {"Name", msg.Name}, {"ContentType", msg.ContentType}} {
		if len(f.v) > maxShortString {
			return &broker.Error{Op: opPublish, Kind: broker.ErrInvalid,
				Err: fmt.Errorf("message %.64s: %s is %d bytes, AMQP allows at most %d", msg.ID, f.what, len(f.v), maxShortString)}
		}
	}
	for k := range msg.Headers {
		if len(k) > maxShortString {
			return &broker.Error{Op: opPublish, Kind: broker.ErrInvalid,
				Err: fmt.Errorf("message %s: header name %.32q... is %d bytes, AMQP allows at most %d", msg.ID, k, len(k), maxShortString)}
		}
	}
	return nil
}

// withdraw takes r back if no session ever carried it (it waited in the
// queue), so that a caller who gives up knows for sure it was not sent and
// a later retry or dead letter does not duplicate it.
func (b *Broker) withdraw(r *record) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.sent {
		return false
	}
	i := slices.Index(b.queue, r)
	if i < 0 {
		return false
	}
	b.queue = slices.Delete(b.queue, i, i+1)
	<-b.window
	return true
}

func (b *Broker) resolve(r *record, err error) {
	r.err = err
	close(r.done)
	<-b.window
}

// limitSize lowers the size limit to what the server said it takes.
func (b *Broker) limitSize(n int) {
	if int64(n) < b.maxSize.Load() {
		b.maxSize.Store(int64(n))
		b.log.Warn("rabbitmq publisher: the server's max_message_size is lower than WithMaxMessageSize; using it",
			"component", b.conn.component, "limit", n)
	}
}

var errClosed = &broker.Error{Op: opPublish, Kind: broker.ErrClosed}

// why describes the connection state for an error; the caller holds b.mu.
func (b *Broker) why() string {
	switch {
	case b.sess == nil && b.lastErr != nil:
		return fmt.Sprintf("not connected (last error: %v)", b.lastErr)
	case b.sess == nil:
		return "not connected yet"
	case b.blocked != "":
		return "the broker blocks publishing: " + b.blocked
	}
	return ""
}

// notSentErr reports a message withdrawn before any connection carried it:
// retryable, never a duplicate.
func (b *Broker) notSentErr(ctx context.Context, id, why string) error {
	if why == "" {
		b.mu.Lock()
		why = b.why()
		b.mu.Unlock()
	}
	if why == "" {
		why = "waiting for the connection"
	}
	return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("message %s not sent: %s: %w", id, why, ctx.Err())}
}

// unknownErr reports a ctx that ended after the message was written: it
// may still be confirmed (the adapter keeps it in flight, re-sending it
// after a reconnect), so a retry may duplicate it.
func (b *Broker) unknownErr(ctx context.Context, id string) error {
	b.mu.Lock()
	why := b.why()
	b.mu.Unlock()
	if why == "" {
		why = "no confirm from the broker yet"
	}
	return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("message %s sent, %s: %w: %w", id, why, broker.ErrOutcomeUnknown, ctx.Err())}
}

// newRecord maps m onto an AMQP publishing with routing key key, with the
// CloudEvents headers when ceSource is set.
func newRecord(key string, m broker.Message, ceSource string) *record {
	ts := m.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	var headers amqp.Table
	if len(m.Headers) > 0 || m.Key != "" || ceSource != "" {
		n := len(m.Headers) + 1
		if ceSource != "" {
			n += 6
		}
		headers = make(amqp.Table, n)
		for k, v := range m.Headers {
			headers[k] = v
		}
		if m.Key != "" {
			headers[broker.HeaderKey] = m.Key
		}
		if ceSource != "" {
			// ts, not m.Time: the attribute and the timestamp property
			// say the same (the property has whole seconds only).
			broker.CloudEventsHeaders(broker.CloudEventsPrefixAMQP, ceSource, m, ts, func(k, v string) { headers[k] = v })
		}
	}
	return &record{
		key: key,
		pub: amqp.Publishing{
			Headers:      headers,
			ContentType:  m.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    m.ID,
			Timestamp:    ts,
			Type:         m.Name,
			Body:         m.Body,
		},
		done: make(chan struct{}),
	}
}

// Describe says where Publish sends m: the exchange, with routing key
// m.Name. It implements broker.Describer.
func (b *Broker) Describe(m broker.Message) broker.Destination {
	return broker.Destination{System: "rabbitmq", Name: b.exchange.name, RoutingKey: m.Name}
}
