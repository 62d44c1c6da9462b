package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/internal/backoff"
)

// Subscriber consumes cfg.Topic in a sarama consumer group and hands each
// record to a broker.Handler. It implements broker.Subscriber.
//
// Records of one partition are handled one at a time, in order. A record's
// offset is marked (and committed, every second and on Close or rebalance)
// only after its handler succeeded or it was dead-lettered. A failing
// handler is retried with backoff while the partition waits; after
// WithMaxAttempts, or at once for broker.Permanent errors, the record is
// produced to "<topic>.dlq" (which must exist) with the broker.HeaderDeadLetter*
// reason headers, then marked. If the partition is taken away meanwhile
// (rebalance, Close), the record is not marked and its new owner handles it
// again: at least once.
type Subscriber struct {
	opts    options
	topic   string
	handler broker.Handler
	group   sarama.ConsumerGroup
	dlq     *Broker

	consume       context.Context // ended by Close: stop fetching
	stopConsume   context.CancelFunc
	handlerCtx    context.Context // ended when Close gives up
	cancelHandler context.CancelFunc
	done          chan struct{}
	once          sync.Once
}

// NewSubscriber joins consumer group groupID on cfg.Topic and starts
// handing records to h. The connection options are the publisher's
// (WithSASL, WithTLS, WithSaramaConfig...); WithMaxAttempts,
// WithRetryBackoff and WithStartAtNewest are the subscriber's.
func NewSubscriber(ctx context.Context, cfg broker.Config, groupID string, h broker.Handler, opts ...Option) (*Subscriber, error) {
	if h == nil || groupID == "" {
		return nil, &broker.Error{Op: "kafka: subscribe", Kind: broker.ErrInvalid, Err: errors.New("need a handler and a group id")}
	}
	cfg, o, sc, err := prepare(cfg, opts)
	if err != nil {
		return nil, err
	}
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	if o.startNewest {
		sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Return.Errors = true

	client, err := connect(ctx, cfg.Addrs(), sc, o)
	if err != nil {
		return nil, err
	}
	if err := checkTopic(client, cfg.Topic); err != nil {
		_ = client.Close()
		return nil, err
	}
	group, err := sarama.NewConsumerGroupFromClient(groupID, client)
	if err != nil {
		_ = client.Close()
		return nil, wrap("join group "+groupID, err)
	}
	dlqOpts := append(append([]Option{}, opts...), WithLogger(o.logger))
	dlq, err := NewDeadLetterSink(ctx, cfg, dlqOpts...)
	if err != nil {
		_ = group.Close()
		_ = client.Close()
		return nil, err
	}
	s := &Subscriber{opts: o, topic: cfg.Topic, handler: h, group: group, dlq: dlq.b, done: make(chan struct{})}
	s.consume, s.stopConsume = context.WithCancel(context.Background())
	s.handlerCtx, s.cancelHandler = context.WithCancel(context.Background())
	go s.run(client)
	go func() {
		for err := range group.Errors() {
			o.logger.Warn("kafka: consumer group error", "group", groupID, "err", err)
		}
	}()
	o.logger.Info("kafka: consuming", "topic", cfg.Topic, "group", groupID)
	return s, nil
}

// run consumes until Close; Consume returns at every rebalance.
func (s *Subscriber) run(client sarama.Client) {
	defer close(s.done)
	defer client.Close()
	defer s.group.Close() // commits what was marked
	for s.consume.Err() == nil {
		if err := s.group.Consume(s.consume, []string{s.topic}, groupHandler{s}); err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
			s.opts.logger.Warn("kafka: consume failed, retrying", "topic", s.topic, "err", err)
			select {
			case <-s.consume.Done():
			case <-time.After(backoff.Policy{Initial: s.opts.retryMin, Max: s.opts.retryMax}.Delay(1)):
			}
		}
	}
}

type groupHandler struct{ s *Subscriber }

func (groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (g groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !g.s.handle(sess.Context(), m) {
				return nil // partition lost or closing: not marked, handled again by its next owner
			}
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// handle runs the handler with retries, dead-lettering when they run out.
// It reports whether the record may be marked.
func (s *Subscriber) handle(session context.Context, m *sarama.ConsumerMessage) bool {
	d := toDelivery(m)
	var first time.Time
	for attempt := 1; ; attempt++ {
		d.Attempt = attempt
		err := adapter.CallHandler(s.handlerCtx, s.handler, d)
		if err == nil {
			return true
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		if broker.Permanent(err) || attempt >= s.opts.maxAttempts {
			return s.deadLetter(session, d, err, attempt, first, now)
		}
		wait := backoff.Policy{Initial: s.opts.retryMin, Max: s.opts.retryMax}.Delay(attempt)
		s.opts.logger.Warn("kafka: handler failed, retrying", "source", d.Source, "id", d.ID, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-session.Done():
			return false
		case <-time.After(wait):
		}
	}
}

func (s *Subscriber) deadLetter(session context.Context, d broker.Delivery, err error, attempts int, first, last time.Time) bool {
	cat := "handler_failed"
	if broker.Permanent(err) {
		cat = "invalid"
	}
	dl := broker.DeadLetter{Message: d.Message, Reason: err.Error(), Category: cat, Attempts: attempts, FirstFailure: first, LastFailure: last}
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(session, 30*time.Second)
		perr := s.dlq.Publish(ctx, dl.Annotated())
		cancel()
		if perr == nil {
			s.opts.logger.Warn("kafka: record dead-lettered", "source", d.Source, "id", d.ID, "attempts", attempts, "to", s.topic+".dlq", "err", err)
			return true
		}
		s.opts.logger.Error("kafka: cannot dead-letter a record, retrying", "source", d.Source, "id", d.ID, "err", perr)
		select {
		case <-session.Done():
			return false
		case <-time.After(backoff.Policy{Initial: s.opts.retryMin, Max: s.opts.retryMax}.Delay(try + 1)):
		}
	}
}

func toDelivery(m *sarama.ConsumerMessage) broker.Delivery {
	msg := broker.Message{Key: string(m.Key), Body: m.Value, Time: m.Timestamp}
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		switch k := string(h.Key); k {
		case HeaderName:
			msg.Name = string(h.Value)
		case HeaderID:
			msg.ID = string(h.Value)
		case HeaderContentType:
			msg.ContentType = string(h.Value)
		default:
			if msg.Headers == nil {
				msg.Headers = map[string]string{}
			}
			msg.Headers[k] = string(h.Value)
		}
	}
	return broker.Delivery{Message: msg, Attempt: 1, Source: fmt.Sprintf("topic %s[%d]@%d", m.Topic, m.Partition, m.Offset)}
}

// Close stops fetching, lets the running handler of each partition finish,
// commits the marked offsets and leaves the group. If ctx ends first, the
// handlers' ctx is cancelled and Close returns ctx.Err(); unmarked records
// are handled again by the group. A second Close returns nil.
func (s *Subscriber) Close(ctx context.Context) error {
	first := false
	s.once.Do(func() { first = true })
	if !first {
		return nil
	}
	s.stopConsume()
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancelHandler()
		<-s.done
	}
	s.cancelHandler()
	if cerr := s.dlq.Close(ctx); err == nil && cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
		err = cerr
	}
	s.opts.logger.Info("kafka: subscriber closed", "topic", s.topic)
	return err
}
