package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Headers the subscriber sets on the copies it parks for a retry.
const (
	// HeaderAttempt carries the attempt number of a retried delivery's
	// copy. On a quorum queue the handler sees it plus x-delivery-count
	// (the copy's returns: crashes, disconnects), an upper bound of its
	// attempts.
	HeaderAttempt = "x-attempt"
	// HeaderFirstFailure carries when the delivery first failed (RFC 3339),
	// so that its dead letter can say so.
	HeaderFirstFailure = "x-first-failure"
	// HeaderOriginalRoutingKey carries, on a dead letter, the routing key
	// the message was first published with.
	HeaderOriginalRoutingKey = "x-original-routing-key"
)

// Subscriber consumes a durable queue bound to the exchange and hands each
// delivery to a broker.Handler. It implements broker.Subscriber and
// broker.HealthChecker.
//
// A failed delivery is retried after WithRetryDelay with its attempt
// number in the "x-attempt" header; after WithMaxAttempts, or at once for
// broker.Permanent errors, it goes to "<queue>.dlq" with the
// broker.HeaderDeadLetter* reason headers. Both paths are at least once
// across a crash of the broker, and nothing is requeued in a hot loop:
//
//   - a [Quorum] queue's failed delivery is re-published (confirmed, on the
//     subscriber's second connection) to "<queue>.retry", a quorum queue
//     whose TTL dead-letters it back at least once, then acked;
//   - a [Classic] queue's failed delivery is held unacknowledged for the
//     delay (the broker keeps it, across its own crash), then its copy is
//     re-published to the queue, confirmed, and the original acked. A held
//     delivery takes a prefetch slot while it waits (WithPrefetch), and the
//     delay must stay well under the broker's consumer_timeout (30 min).
//
// Topology, declared on every (re)connect: the exchange (as the publisher
// declares it), the queue with its binding keys, "<queue>.dlq", and for a
// quorum queue "<queue>.retry" plus, on the queue itself, a delivery limit
// (2 × WithMaxAttempts + 5) after which the broker dead-letters a delivery
// that keeps coming back unfinished (a handler that crashes the process).
type Subscriber struct {
	exchange string
	queue    Queue
	source   string // "queue <name>", every delivery's Source
	handler  broker.Handler
	opts     subscriberOptions
	conn     *connector
	pub      *Broker // retries and dead letters, through the default exchange

	closing       lifecycle.Closing
	abort         chan struct{} // closed when Close gives up waiting for handlers
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
	busy          sync.WaitGroup // handlers running; no Add once closing began
	held          sync.WaitGroup // failed classic deliveries waiting their retry; no Add once closing began
	wg            sync.WaitGroup // the supervisor, the workers, a consumer cancel

	mu      sync.Mutex // guards the fields below and busy.Add against Close
	link    connection
	ch      channel
	tag     string
	lastErr error

	handled, retried, deadLettered atomic.Int64
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
	cfg, err = prepare(cfg, &o.conn)
	if err != nil {
		return nil, err
	}
	if o.prefetch == 0 {
		o.prefetch = max(defaultPrefetch, 4*o.concurrency)
	}
	s := &Subscriber{exchange: cfg.Exchange, queue: q, source: "queue " + q.Name, handler: h, opts: o, abort: make(chan struct{})}
	s.conn = newConnector("rabbitmq subscriber", cfg, &s.opts.conn)
	s.handlerCtx, s.cancelHandler = context.WithCancel(context.Background())
	po := defaultPublisherOptions()
	po.conn = s.opts.conn
	po.window = 4 * o.concurrency
	po.maxMessageSize = 1 << 30 // the copy of a message the broker delivered
	if s.pub, err = start(ctx, "rabbitmq subscriber "+q.Name+" (retries)", cfg, "", po); err != nil {
		s.conn.stop()
		return nil, err
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
	if err := declareExchange(ch, s.exchange, "", s.opts.conn.passive); err != nil {
		return nil, nil, "", err
	}
	q := s.queue.Name
	for _, dq := range subscriberQueues(s.queue, s.opts) {
		exchange := ""
		if dq.Name == q {
			exchange = s.exchange
		}
		if err := declareQueue(ch, dq, exchange); err != nil {
			return nil, nil, "", err
		}
	}
	if err := ch.Qos(s.opts.prefetch, 0, false); err != nil {
		return nil, nil, "", wrap(opSubscribe, "set prefetch", err)
	}
	tag := fmt.Sprintf("%s-%d", s.opts.conn.connName, time.Now().UnixNano())
	deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		return nil, nil, "", wrap(opSubscribe, "consume "+q, err)
	}
	return deliveries, ch, tag, nil
}

// subscriberQueues is the subscriber's topology for queue q, by type.
//
// Quorum: q, with a broker-side backstop (x-delivery-limit, then
// at-least-once dead-lettering to "<q>.dlq") for a delivery that keeps
// coming back without its handler ever finishing (one that crashes the
// process); "<q>.retry", where failed deliveries wait their delay and are
// dead-lettered back to q at least once; "<q>.dlq". Classic: q and
// "<q>.dlq"; classic dead-lettering is at most once across a broker crash,
// so failed deliveries wait in the subscriber instead (see process).
func subscriberQueues(q Queue, o subscriberOptions) []Queue {
	dlq := Queue{Name: q.Name + ".dlq", Type: q.Type}
	if q.Type != Quorum {
		return []Queue{q, dlq}
	}
	atLeastOnce := func(to string) amqp.Table {
		return amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": to,
			"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
	}
	main := q
	main.Args = atLeastOnce(dlq.Name)
	main.Args["x-delivery-limit"] = int64(2*o.maxAttempts + 5)
	for k, v := range q.Args {
		main.Args[k] = v
	}
	retry := Queue{Name: q.Name + ".retry", Type: Quorum, Args: atLeastOnce(q.Name)}
	retry.Args["x-message-ttl"] = o.retryDelay.Milliseconds()
	return []Queue{main, retry, dlq}
}

// supervise runs workers on each session's deliveries and reconnects when
// the session ends, until Close.
func (s *Subscriber) supervise(deliveries <-chan amqp.Delivery) {
	defer s.wg.Done()
	for {
		if deliveries != nil {
			if s.work(deliveries) {
				return // Close gave up on a handler; it closed the connection
			}
			s.mu.Lock()
			link := s.link
			s.mu.Unlock()
			_ = link.CloseDeadline(time.Now().Add(time.Second))
			select {
			case <-s.closing.Done():
				return
			default:
			}
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
			_ = ch.Cancel(tag, false)
		default:
		}
	}
}

// work runs the configured number of workers on a session's deliveries
// until the channel closes, or until Close gives up (aborted). The
// handlers run on the workers themselves (no goroutine per delivery).
// alive counts the workers still running, free those of them outside a
// handler call. When Close gives up, work waits for the free ones to end
// (Close closes the connection, which ends their range) and leaves behind
// only workers stuck in a handler that ignores its ctx: each ends when its
// handler returns, the outcome discarded.
func (s *Subscriber) work(deliveries <-chan amqp.Delivery) (aborted bool) {
	var alive, free atomic.Int32
	alive.Store(int32(s.opts.concurrency))
	free.Store(int32(s.opts.concurrency))
	w := workerState{free: &free, changed: make(chan struct{}, 1)}
	for range s.opts.concurrency {
		go func() {
			defer func() { free.Add(-1); alive.Add(-1); w.poke() }()
			for d := range deliveries {
				s.process(d, w)
			}
		}()
	}
	abort := s.abort
	for alive.Load() > 0 && !(aborted && free.Load() == 0) {
		select {
		case <-w.changed:
		case <-abort:
			abort, aborted = nil, true
		}
	}
	return aborted
}

// workerState is what a worker tells work: whether it is in a
// handler call (free counts the workers that are not).
type workerState struct {
	free    *atomic.Int32
	changed chan struct{} // (buffered 1) a count changed
}

func (w workerState) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// process handles one delivery on the calling worker.
func (s *Subscriber) process(d amqp.Delivery, w workerState) {
	s.mu.Lock()
	if s.closing.Begun() {
		s.mu.Unlock()
		_ = d.Nack(false, true) // not started: back to the queue for the next consumer
		return
	}
	s.busy.Add(1)
	s.mu.Unlock()
	defer s.busy.Done()

	del, first := toDelivery(d, s.queue.Name, s.source)
	w.free.Add(-1)
	w.poke()
	err := adapter.CallHandler(s.handlerCtx, s.handler, del)
	w.free.Add(1)
	select {
	case <-s.abort:
		return // Close gave up meanwhile: the delivery is redelivered once the connection closes
	default:
	}
	if err == nil {
		s.handled.Add(1)
		_ = d.Ack(false) // if the channel died, the broker redelivers: at least once
		return
	}
	now := time.Now()
	if first.IsZero() {
		first = now
	}
	m := del.Message
	m.Headers = copyHeaders(m.Headers)
	if adapter.Outcome(err, del.Attempt, s.opts.maxAttempts) {
		m = adapter.DeadLetterOf(del, err, del.Attempt, first, now).Annotated()
		m.Headers[HeaderOriginalRoutingKey] = d.RoutingKey
		s.park(d, del, err, s.queue.Name+".dlq", m, broker.ObservedDeadLetter)
		return
	}
	m.Headers[HeaderAttempt] = strconv.Itoa(del.Attempt + 1)
	m.Headers[HeaderFirstFailure] = first.UTC().Format(time.RFC3339Nano)
	if s.queue.Type == Quorum {
		s.park(d, del, err, s.queue.Name+".retry", m, broker.ObservedRetry) // the broker holds it, dead-letters it back at least once
		return
	}
	s.hold(d, del, err, m)
}

// park moves a failed delivery's copy to a queue (its retry queue or its
// dead-letter queue), confirmed, then acks the original: never both gone,
// at worst both there (a duplicate).
func (s *Subscriber) park(d amqp.Delivery, del broker.Delivery, herr error, target string, m broker.Message, kind broker.ObservationKind) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	stop := context.AfterFunc(s.handlerCtx, cancel) // Close giving up stops the wait
	perr := s.pub.publish(ctx, target, m)
	stop()
	cancel()
	if perr != nil {
		// Could not park it: leave it to the broker to redeliver, after the
		// retry delay so that a broken retry path is not a hot loop.
		s.opts.conn.logger.Warn("rabbitmq subscriber: could not move a failed delivery, requeueing it",
			"component", s.conn.component, "to", target, "id", d.MessageId, "err", perr)
		t := time.NewTimer(s.opts.retryDelay)
		select {
		case <-t.C:
		case <-s.closing.Done():
			t.Stop()
		}
		_ = d.Nack(false, true)
		return
	}
	s.failed(d, del, herr, target, kind)
	_ = d.Ack(false)
}

// hold keeps a failed delivery of a classic queue unacknowledged for the
// retry delay, then puts its copy (next attempt) back on the queue,
// confirmed, and acks the original. The broker keeps the original until
// then, across its own crash; no broker-side dead-lettering is involved.
// Close hands held deliveries back to the queue.
func (s *Subscriber) hold(d amqp.Delivery, del broker.Delivery, herr error, m broker.Message) {
	s.mu.Lock()
	if s.closing.Begun() {
		s.mu.Unlock()
		_ = d.Nack(false, true)
		return
	}
	s.held.Add(1)
	s.mu.Unlock()
	s.failed(d, del, herr, s.queue.Name+" (held "+s.opts.retryDelay.String()+")", broker.ObservedRetry)
	go func() {
		defer s.held.Done()
		t := time.NewTimer(s.opts.retryDelay)
		select {
		case <-t.C:
		case <-s.closing.Done():
			t.Stop()
			_ = d.Nack(false, true) // back to the queue, for this subscriber's successor
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		stop := context.AfterFunc(s.handlerCtx, cancel)
		err := s.pub.publish(ctx, s.queue.Name, m)
		stop()
		cancel()
		if err != nil {
			_ = d.Nack(false, true)
			return
		}
		_ = d.Ack(false)
	}()
}

// failed logs and reports a failed delivery moved to target.
func (s *Subscriber) failed(d amqp.Delivery, del broker.Delivery, err error, target string, kind broker.ObservationKind) {
	if kind == broker.ObservedRetry {
		s.retried.Add(1)
	} else {
		s.deadLettered.Add(1)
	}
	s.opts.conn.logger.Warn("rabbitmq subscriber: handler failed", "component", s.conn.component, "queue", s.queue.Name,
		"id", d.MessageId, "attempt", del.Attempt, "moved_to", target, "err", err)
	s.conn.observe(broker.Observation{Kind: kind, Destination: target, MessageID: d.MessageId, MessageName: del.Name,
		Attempt: del.Attempt, Category: broker.Category(err), Err: err})
}

func copyHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h)+2)
	for k, v := range h {
		out[k] = v
	}
	return out
}

// toDelivery maps an AMQP delivery to a broker.Delivery, reading (and
// removing) the retry headers: the attempt number and the first failure.
func toDelivery(d amqp.Delivery, queue, source string) (broker.Delivery, time.Time) {
	m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, ContentType: d.ContentType, Time: d.Timestamp}
	if m.Name == "" {
		m.Name = d.RoutingKey
	}
	attempt, returns := 1, 0
	var first time.Time
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			switch k {
			case HeaderAttempt:
				if n, err := strconv.Atoi(fmt.Sprint(v)); err == nil && n > 0 {
					attempt = n
				}
			case HeaderFirstFailure:
				first, _ = time.Parse(time.RFC3339Nano, fmt.Sprint(v))
			case broker.HeaderKey:
				m.Key = fmt.Sprint(v)
			case "x-delivery-count": // quorum queues: this copy's returns (crash, disconnect, nack)
				if n, err := strconv.Atoi(fmt.Sprint(v)); err == nil && n > 0 {
					returns = n
				}
			default:
				if sv, ok := v.(string); ok {
					m.Headers[k] = sv // the usual case, without fmt
				} else {
					m.Headers[k] = fmt.Sprint(v)
				}
			}
		}
	}
	attempt += returns // an upper bound of the handler's attempts: never an undercount
	return broker.Delivery{Message: m, Attempt: attempt, Seq: adapter.SeqOf(m.Headers), Source: source, Origin: broker.Origin{System: "rabbitmq",
		Destination: queue, Exchange: d.Exchange, RoutingKey: d.RoutingKey, Partition: -1}}, first
}
