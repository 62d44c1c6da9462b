package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// HeaderAttempt carries the attempt number of a retried delivery.
const HeaderAttempt = "x-attempt"

// Subscriber consumes a durable queue bound to the exchange and hands each
// delivery to a broker.Handler. It implements broker.Subscriber.
//
// Topology, declared on every (re)connect: the exchange (as the publisher
// declares it), the queue with its binding keys, "<queue>.retry" (messages
// wait there WithRetryDelay, then RabbitMQ dead-letters them back to the
// queue) and "<queue>.dlq" (what failed WithMaxAttempts times, or at once
// for broker.Permanent errors, with the broker.HeaderDeadLetter* reason headers).
// A failed delivery is re-published to the retry queue with its attempt
// number in the "x-attempt" header, then acked; nothing is requeued in a hot
// loop.
type Subscriber struct {
	*dialer
	exchange string
	queue    Queue
	handler  broker.Handler
	stop     context.CancelFunc // cancels dialer.life

	handlerCtx    context.Context // cancelled when Close gives up
	cancelHandler context.CancelFunc
	closing       chan struct{}
	once          sync.Once
	sessions      sync.WaitGroup // the supervisor and the workers

	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
	tag  string
}

// NewSubscriber connects as cfg says, declares the topology for queue q
// (q.Keys default to "#") and starts consuming it into h. Connection
// options are the publisher's (WithLogger, WithTLS, WithHeartbeat,
// WithURLs...); WithPrefetch, WithConcurrency, WithMaxAttempts and
// WithRetryDelay are the subscriber's. It reconnects by itself like the
// publisher; unacknowledged deliveries are then redelivered.
func NewSubscriber(ctx context.Context, cfg broker.Config, q Queue, h broker.Handler, opts ...Option) (*Subscriber, error) {
	if h == nil {
		return nil, &broker.Error{Op: "rabbitmq: subscribe", Kind: broker.ErrInvalid, Err: errors.New("handler is nil")}
	}
	cfg, o, err := prepare(cfg, append(slices.Clip(opts), WithQueue(q))) // WithQueue validates q and defaults its keys
	if err != nil {
		return nil, err
	}
	q = o.queues[len(o.queues)-1]
	if o.prefetch == 0 {
		o.prefetch = 4 * o.concurrency
	}
	life, stop := context.WithCancel(context.Background())
	hctx, hcancel := context.WithCancel(context.Background())
	s := &Subscriber{
		dialer:   &dialer{opts: o, targets: targets(cfg, o), life: life},
		exchange: cfg.Exchange, queue: q, handler: h, stop: stop,
		handlerCtx: hctx, cancelHandler: hcancel, closing: make(chan struct{}),
	}
	err = s.tryEach(ctx, func(ctx context.Context) error {
		deliveries, err := s.consume(ctx)
		if err == nil {
			s.sessions.Add(1)
			go s.supervise(deliveries)
		}
		return err
	})
	if err != nil {
		stop()
		hcancel()
		return nil, err
	}
	return s, nil
}

// consume connects, declares the topology and starts consuming.
func (s *Subscriber) consume(ctx context.Context) (<-chan amqp.Delivery, error) {
	conn, addr, _, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	deliveries, ch, tag, err := s.setup(conn, addr)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s.mu.Lock()
	s.conn, s.ch, s.tag = conn, ch, tag
	s.mu.Unlock()
	s.opts.logger.Info("rabbitmq: consuming", "addr", addr, "queue", s.queue.Name, "keys", s.queue.Keys)
	return deliveries, nil
}

func (s *Subscriber) setup(conn *amqp.Connection, addr string) (<-chan amqp.Delivery, *amqp.Channel, string, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, "", wrap("open channel on "+addr, err)
	}
	if err := declareExchange(ch, s.exchange, s.opts); err != nil {
		return nil, nil, "", err
	}
	q := s.queue.Name
	if err := declareQueue(ch, s.queue, s.exchange); err != nil {
		return nil, nil, "", err
	}
	retry := Queue{Name: q + ".retry", Args: amqp.Table{
		"x-message-ttl":             s.opts.retryDelay.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": q,
	}}
	if err := declareQueue(ch, retry, ""); err != nil {
		return nil, nil, "", err
	}
	if err := declareQueue(ch, Queue{Name: q + ".dlq"}, ""); err != nil {
		return nil, nil, "", err
	}
	if err := ch.Qos(s.opts.prefetch, 0, false); err != nil {
		return nil, nil, "", wrap("set prefetch", err)
	}
	if err := ch.Confirm(false); err != nil { // retries and dead letters are confirmed
		return nil, nil, "", wrap("enable confirms", err)
	}
	tag := fmt.Sprintf("%s-%d", s.opts.connName, time.Now().UnixNano())
	deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		return nil, nil, "", wrap("consume "+q, err)
	}
	return deliveries, ch, tag, nil
}

// supervise runs workers on each session's deliveries and reconnects when
// the session ends, until Close.
func (s *Subscriber) supervise(deliveries <-chan amqp.Delivery) {
	defer s.sessions.Done()
	for {
		var workers sync.WaitGroup
		for range s.opts.concurrency {
			workers.Go(func() {
				for d := range deliveries {
					s.process(d)
				}
			})
		}
		workers.Wait()
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		_ = conn.Close()
		select {
		case <-s.closing:
			return
		default:
		}
		s.opts.logger.Warn("rabbitmq: consumer lost its connection, reconnecting", "queue", s.queue.Name)
		reconnected := s.retryUntil(s.closing, "consumer reconnect", func() error {
			var err error
			deliveries, err = s.consume(s.life)
			return err
		})
		if !reconnected {
			return
		}
		select {
		case <-s.closing: // Close started while we reconnected: its Cancel missed this channel
			s.mu.Lock()
			ch, tag := s.ch, s.tag
			s.mu.Unlock()
			_ = ch.Cancel(tag, false)
		default:
		}
	}
}

func (s *Subscriber) process(d amqp.Delivery) {
	select {
	case <-s.closing:
		_ = d.Nack(false, true) // not started: back to the queue for the next consumer
		return
	default:
	}
	del := toDelivery(d, s.queue.Name)
	err := adapter.CallHandler(s.handlerCtx, s.handler, del)
	if err == nil {
		_ = d.Ack(false) // if the channel died, the broker redelivers: at least once
		return
	}
	target, kind := s.queue.Name+".retry", "retry"
	if broker.Permanent(err) || del.Attempt >= s.opts.maxAttempts {
		target, kind = s.queue.Name+".dlq", "dead-letter"
	}
	pub := amqp.Publishing{
		Headers: amqp.Table{}, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Type: d.Type, Timestamp: d.Timestamp, Body: d.Body,
	}
	for k, v := range d.Headers {
		pub.Headers[k] = v
	}
	if kind == "retry" {
		pub.Headers[HeaderAttempt] = int32(del.Attempt + 1)
	} else {
		dl := adapter.DeadLetterOf(del, err, del.Attempt, time.Time{}, time.Now()).Annotated()
		for k, v := range dl.Headers {
			pub.Headers[k] = v
		}
		pub.Headers["x-original-routing-key"] = d.RoutingKey
	}
	if perr := s.republish(target, pub); perr != nil {
		// Could not park it: leave it to the broker to redeliver, after the
		// retry delay so that a broken retry path is not a hot loop.
		s.opts.logger.Warn("rabbitmq: could not move a failed delivery, requeueing", "to", target, "id", d.MessageId, "err", perr)
		t := time.NewTimer(s.opts.retryDelay)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
		}
		_ = d.Nack(false, true)
		return
	}
	s.opts.logger.Warn("rabbitmq: handler failed", "queue", s.queue.Name, "id", d.MessageId, "attempt", del.Attempt, "moved_to", target, "err", err)
	_ = d.Ack(false)
}

// republish sends pub to queue (default exchange) and waits for the confirm.
func (s *Subscriber) republish(queue string, pub amqp.Publishing) error {
	s.mu.Lock()
	ch := s.ch
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.life, 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, pub)
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err == nil && !ok {
		err = errors.New("nacked")
	}
	return err
}

func toDelivery(d amqp.Delivery, queue string) broker.Delivery {
	m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, ContentType: d.ContentType, Time: d.Timestamp}
	if m.Name == "" {
		m.Name = d.RoutingKey
	}
	attempt := 1
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			if k == HeaderAttempt {
				if n, err := strconv.Atoi(fmt.Sprint(v)); err == nil && n > 0 {
					attempt = n
				}
				continue
			}
			m.Headers[k] = fmt.Sprint(v)
		}
	}
	return broker.Delivery{Message: m, Attempt: attempt, Source: "queue " + queue}
}

// Close stops consuming (deliveries not started go back to the queue), waits
// for the running handlers to finish and be acknowledged, then disconnects.
// If ctx ends first, the handlers' ctx is cancelled and Close returns
// ctx.Err(); what they did not finish is redelivered later. A second Close
// returns nil.
func (s *Subscriber) Close(ctx context.Context) error {
	first := false
	s.once.Do(func() { first = true })
	if !first {
		return nil
	}
	close(s.closing)
	s.mu.Lock()
	ch, tag := s.ch, s.tag
	s.mu.Unlock()
	_ = ch.Cancel(tag, false) // the broker stops delivering; the deliveries channel closes

	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancelHandler()
		s.stop()
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		_ = conn.Close() // unacknowledged deliveries return to the queue
		<-done
	}
	s.stop()
	s.cancelHandler()
	s.opts.logger.Info("rabbitmq: subscriber closed", "queue", s.queue.Name)
	return err
}
