package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/internal/lanes"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// HeaderOriginalRoutingKey and HeaderOriginalExchange carry, on a dead
// letter in "<queue>.dlq", the routing key (the event name) and the
// exchange the message was first published with: where a re-drive sends it
// back.
const (
	// HeaderOriginalRoutingKey carries, on a dead letter, the routing key
	// the message was first published with (the event name).
	HeaderOriginalRoutingKey = "x-original-routing-key"
	// HeaderOriginalExchange carries, with HeaderOriginalRoutingKey, the
	// exchange the message was first published to.
	HeaderOriginalExchange = "x-original-exchange"
)

// Subscriber consumes a durable queue bound to the exchange and hands each
// delivery to a broker.Handler. It implements broker.Subscriber and
// broker.HealthChecker.
//
// Up to [WithConcurrency] handlers run at once, never two deliveries of
// one key (Delivery.Key, the broker.HeaderKey header) at once, and each
// key's deliveries in queue order ([WithUnordered] lifts the key
// constraint). A failed delivery holds its key: it stays unacknowledged
// in the subscriber and is handled again after a backoff with jitter
// ([WithRetryBackoff]) while the other keys go on; after [WithMaxAttempts],
// or at once for broker.Permanent errors, it goes to "<queue>.dlq" with the
// broker.HeaderDeadLetter* reason headers (confirmed before the original
// is acknowledged) and its key moves on.
//
// Topology, declared on every (re)connect: the exchange, from the same
// spec as the publisher's (the same Config.Exchange and [Option]s, such as
// [WithAlternateExchange], make the same declaration), the queue with its binding keys, and "<queue>.dlq"; a
// quorum queue also gets a delivery limit (2 × WithMaxAttempts + 5) after
// which the broker dead-letters, at least once, a delivery that keeps
// coming back unfinished (a handler that crashes the process).
type Subscriber struct {
	exchange exchangeSpec // the exchange the queue is bound to
	queue    Queue
	source   string // "queue <name>", every delivery's Source
	opts     subscriberOptions
	conn     *connector
	pub      *Broker                          // dead letters, through the default exchange
	lanes    *lanes.Dispatcher[amqp.Delivery] // the handlers, by key
	log      *slog.Logger                     // the connection's logger with the component, for CallHandler

	closing  lifecycle.Closing
	wg       sync.WaitGroup // the supervisor, a consumer cancel
	sessions atomic.Int64   // sessions consumed, for unordered lanes' keys

	mu      sync.Mutex // guards the fields below
	link    connection
	ch      channel
	tag     string
	lastErr error
}

// NewSubscriber connects as cfg says, declares the topology for queue q
// (q.Keys default to "#") and starts consuming it into h. ctx bounds
// connecting only. Connection options are the publisher's ([Option]);
// the [SubscriberOption]s are its own. It reconnects by itself like the
// publisher; unacknowledged deliveries are then redelivered.
func NewSubscriber(ctx context.Context, cfg broker.Config, q Queue, h broker.Handler, opts ...SubscriberOption) (*Subscriber, error) {
	if h == nil {
		return nil, &broker.Error{Op: opSubscribe, Kind: broker.ErrInvalid, Err: errors.New("handler is nil")}
	}
	q, err := q.withDefaults()
	if err != nil {
		return nil, &broker.Error{Op: opSubscribe, Kind: broker.ErrInvalid, Err: err}
	}
	o := defaultSubscriberOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applySubscriber(&o); err != nil {
			return nil, optionsError(err)
		}
	}
	if err := o.validate(); err != nil {
		return nil, optionsError(err)
	}
	cfg, err = prepare(cfg, &o.conn)
	if err != nil {
		return nil, err
	}
	if o.prefetch == 0 {
		o.prefetch = max(defaultPrefetch, 4*o.concurrency)
	}
	s := &Subscriber{exchange: destination(cfg.Exchange, &o.conn), queue: q, source: "queue " + q.Name, opts: o}
	s.conn = newConnector("rabbitmq subscriber", cfg, &s.opts.conn)
	s.log = s.opts.conn.logger.With("component", s.conn.component)
	po := defaultPublisherOptions()
	po.conn = s.opts.conn
	po.window = 4 * o.concurrency
	po.maxMessageSize = 1 << 30 // the copy of a message the broker delivered
	if s.pub, err = start(ctx, "rabbitmq subscriber "+q.Name+" (dead letters)", cfg, exchangeSpec{}, po); err != nil {
		s.conn.stop()
		return nil, err
	}
	if s.lanes, err = s.newLanes(h); err != nil {
		s.conn.stop()
		_ = s.pub.Close(context.Background())
		return nil, optionsError(err)
	}
	var first <-chan amqp.Delivery
	if !o.conn.lazy {
		err = s.conn.eachOnce(ctx, func(ctx context.Context) error {
			d, err := s.consume(ctx)
			first = d
			return err
		})
		if err != nil {
			s.conn.stop()
			_ = s.lanes.Close(context.Background())
			_ = s.pub.Close(context.Background())
			return nil, err
		}
	}
	s.wg.Add(1)
	go s.supervise(first)
	return s, nil
}

// consume connects, declares the topology and starts consuming.
func (s *Subscriber) consume(ctx context.Context) (<-chan amqp.Delivery, error) {
	conn, addr, err := s.conn.connect(ctx)
	if err != nil {
		s.setErr(err)
		return nil, err
	}
	defer s.conn.closeOnStop(conn)()
	deliveries, ch, tag, err := s.setup(conn, addr)
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(time.Second))
		s.setErr(err)
		return nil, err
	}
	s.mu.Lock()
	s.link, s.ch, s.tag, s.lastErr = conn, ch, tag, nil
	s.mu.Unlock()
	s.opts.conn.logger.Info("rabbitmq subscriber: consuming", "component", s.conn.component, "addr", addr,
		"queue", s.queue.Name, "keys", s.queue.Keys)
	s.conn.observe(broker.Observation{Kind: broker.ObservedConnected, Address: addr, Destination: s.queue.Name})
	return deliveries, nil
}

func (s *Subscriber) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

func (s *Subscriber) setup(conn connection, addr string) (<-chan amqp.Delivery, channel, string, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, "", wrap(opSubscribe, "open channel on "+addr, err)
	}
	if err := s.exchange.declare(ch); err != nil {
		if !errors.Is(err, errAlternateMismatch) || s.exchange.alternate != "" {
			return nil, nil, "", err
		}
		// The exchange exists with an alternate exchange (its publishers'
		// WithAlternateExchange) this subscriber was not given: a
		// subscriber only binds to the exchange, so it takes it as it is.
		// RabbitMQ closed the channel over the refusal: a new one.
		if ch, err = conn.Channel(); err != nil {
			return nil, nil, "", wrap(opSubscribe, "open channel on "+addr, err)
		}
		existing := s.exchange
		existing.passive = true
		if err := existing.declare(ch); err != nil {
			return nil, nil, "", err
		}
		s.log.Info("rabbitmq subscriber: the exchange has an alternate exchange this subscriber was not given; binding to it as it is",
			"exchange", s.exchange.name)
	}
	q := s.queue.Name
	for _, dq := range subscriberQueues(s.queue, s.opts) {
		exchange := ""
		if dq.Name == q {
			exchange = s.exchange.name
		}
		if err := declareBound(ch, dq, exchange); err != nil {
			return nil, nil, "", err
		}
	}
	if err := ch.prefetch(s.opts.prefetch); err != nil {
		return nil, nil, "", wrap(opSubscribe, "set prefetch", err)
	}
	tag := fmt.Sprintf("%s-%d", s.opts.conn.connName, time.Now().UnixNano())
	deliveries, err := ch.consume(q, tag)
	if err != nil {
		return nil, nil, "", wrap(opSubscribe, "consume "+q, err)
	}
	return deliveries, ch, tag, nil
}

// subscriberQueues is the subscriber's topology for queue q, by type:
// q and "<q>.dlq". A quorum q also gets a broker-side backstop
// (x-delivery-limit, then at-least-once dead-lettering to "<q>.dlq") for a
// delivery that keeps coming back without its handler ever finishing (one
// that crashes the process). Failed deliveries are retried in the
// subscriber (see [Subscriber]), so no broker-side retry queue is needed.
func subscriberQueues(q Queue, o subscriberOptions) []Queue {
	dlq := Queue{Name: q.Name + ".dlq", Type: q.Type}
	if q.Type != Quorum {
		return []Queue{q, dlq}
	}
	main := q
	main.Args = amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq.Name,
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
		"x-delivery-limit": int64(2*o.maxAttempts + 5)}
	for k, v := range q.Args {
		main.Args[k] = v
	}
	return []Queue{main, dlq}
}

// supervise feeds each session's deliveries to the lanes and reconnects
// when the session ends, until Close.
func (s *Subscriber) supervise(deliveries <-chan amqp.Delivery) {
	defer s.wg.Done()
	for {
		if deliveries != nil {
			s.feed(deliveries)
			select {
			case <-s.closing.Done():
				return // Close cancelled the consumer: it closes the connection once the handlers are done
			default:
			}
			s.mu.Lock()
			link := s.link
			s.mu.Unlock()
			_ = link.CloseDeadline(time.Now().Add(time.Second))
			s.opts.conn.logger.Warn("rabbitmq subscriber: connection lost, reconnecting", "component", s.conn.component, "queue", s.queue.Name)
			s.conn.observe(broker.Observation{Kind: broker.ObservedDisconnected, Destination: s.queue.Name})
		}
		reconnected := s.conn.retry(s.closing.Done(), "connect", func(int) error {
			var err error
			deliveries, err = s.consume(s.conn.life)
			return err
		})
		if !reconnected {
			return
		}
		select {
		case <-s.closing.Done(): // Close started while we reconnected: its cancel missed this channel
			s.mu.Lock()
			ch, tag := s.ch, s.tag
			s.mu.Unlock()
			_ = ch.cancel(tag)
		default:
		}
	}
}

// feed hands one session's deliveries to the lanes, in queue order, until
// the channel closes (the connection was lost, or Close cancelled the
// consumer). Then the session's deliveries not yet started, or waiting for
// a retry, are dropped from their lanes: the broker redelivers them, on the
// next session, in queue order, and their lanes must not run a later
// delivery of this session after an earlier one came back.
func (s *Subscriber) feed(deliveries <-chan amqp.Delivery) {
	session := s.sessions.Add(1)
	gone := make(chan struct{})
	defer func() {
		close(gone)
		s.lanes.Expire()
	}()
	for d := range deliveries {
		del := toDelivery(d, s.queue.Name, s.source)
		key := del.Key
		if key == "" || s.opts.unordered {
			key = unorderedKey(session, d.DeliveryTag)
		}
		// Closing refuses it: it stays unacknowledged, back to the queue
		// when Close closes the channel (see settle).
		_ = s.lanes.Add(context.Background(), lanes.Item[amqp.Delivery]{Key: key, Delivery: del, Value: d, Gone: gone})
	}
}

// unorderedKey is the lane of a delivery that keeps no order: its own.
// (Keys of the broker.HeaderKey header never start with a NUL byte.)
func unorderedKey(session int64, tag uint64) string {
	var b [1 + 2*20 + 1]byte
	k := append(b[:0], 0)
	k = strconv.AppendInt(k, session, 10)
	k = append(k, '.')
	k = strconv.AppendUint(k, tag, 10)
	return string(k)
}

// toDelivery maps an AMQP delivery to a broker.Delivery: the key from the
// broker.HeaderKey header, the sequence number from broker.HeaderSeq, and
// on a quorum queue the returns the broker counts (x-delivery-count: a
// crash, a disconnect) added to the attempt, an upper bound of the
// handler's attempts (never an undercount).
func toDelivery(d amqp.Delivery, queue, source string) broker.Delivery {
	m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, ContentType: d.ContentType, Time: d.Timestamp}
	attempt := 1
	others := 0 // headers other than the two read here: a map only for them
	for k, v := range d.Headers {
		switch k {
		case broker.HeaderKey:
			m.Key = headerString(v)
		case "x-delivery-count":
			if n, err := strconv.Atoi(headerString(v)); err == nil && n > 0 {
				attempt += n
			}
		default:
			others++
		}
	}
	if others > 0 {
		m.Headers = make(map[string]string, others)
		for k, v := range d.Headers {
			if k != broker.HeaderKey && k != "x-delivery-count" {
				m.Headers[k] = headerString(v)
			}
		}
	}
	if m.Headers != nil {
		// A CloudEvent in binary mode: its attributes fill what the AMQP
		// properties and this library's headers did not.
		broker.FromCloudEvents(&m, cloudEventsPrefixes...)
	}
	if m.Name == "" {
		m.Name = d.RoutingKey
	}
	return broker.Delivery{Message: m, Attempt: attempt, Seq: adapter.SeqOf(m.Headers), Source: source, Origin: broker.Origin{System: "rabbitmq",
		Destination: queue, Exchange: d.Exchange, RoutingKey: d.RoutingKey, Partition: -1}}
}

// cloudEventsPrefixes are the CloudEvents header prefixes the subscriber
// reads, in order: the one the publisher writes (the AMQP binding's), the
// same with the JMS-safe separator (Spring AMQP), the HTTP binding's
// (Knative's RabbitMQ broker).
var cloudEventsPrefixes = []string{broker.CloudEventsPrefixAMQP, broker.CloudEventsPrefixAMQPAlt, broker.CloudEventsPrefixHTTP}

// headerString is an AMQP header value as a string: the usual case without
// fmt, and a timestamp (an AMQP binding's cloudEvents:time, say) in
// RFC 3339.
func headerString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}
