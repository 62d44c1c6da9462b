package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// deadLetterTimeout bounds one attempt to produce a record to <topic>.dlq.
const deadLetterTimeout = 30 * time.Second

// run connects if link is nil, then consumes until Close; it leaves the
// group and closes the client on the way out.
func (s *Subscriber) run(link *groupLink) {
	defer close(s.done)
	if link == nil {
		l, err := s.conn.run(s.stop, false)
		if err != nil {
			return // Close stopped it
		}
		s.mu.Lock()
		if s.state != stateConnecting {
			s.mu.Unlock()
			closeGroup(l)
			return
		}
		s.state = stateOpen
		s.mu.Unlock()
		s.log.Info("kafka: consuming", "topic", s.topic, "group", s.groupID, "attempts", s.conn.tried())
		link = &l
	}
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range link.group.Errors() {
			s.log.Warn("kafka: consumer group error", "topic", s.topic, "group", s.groupID, "err", err)
		}
	}()
	s.consume(link.group)
	_ = link.group.Close() // commits what was marked, leaves the group, closes Errors
	<-errsDone
	_ = link.client.Close()
}

// consume calls Consume until Close: it returns at every rebalance. After a
// failure it waits s.rejoin(n), n counting consecutive failures; a session
// set up (or ended normally) resets n.
func (s *Subscriber) consume(g group) {
	failures := 0
	for s.stop.Err() == nil {
		before := s.sessions.Load()
		err := g.Consume(s.stop, []string{s.topic}, groupHandler{s})
		if err == nil || s.sessions.Load() != before {
			failures = 0
		}
		if err == nil {
			continue
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) || s.stop.Err() != nil {
			return
		}
		failures++
		s.sessionFailed(wrap(opConsume, err, "topic %q, group %q", s.topic, s.groupID))
		wait := s.rejoin(failures)
		s.log.Warn("kafka: consume failed, retrying", "topic", s.topic, "group", s.groupID,
			"attempt", failures, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-s.stop.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Subscriber) sessionFailed(err error) {
	s.mu.Lock()
	was := s.lastErr != nil
	s.lastErr = err
	s.mu.Unlock()
	if !was {
		s.observe(broker.Observation{Kind: broker.ObservedDisconnected, Err: err, Category: broker.Category(err)})
	}
}

func (s *Subscriber) sessionUp() {
	s.sessions.Add(1)
	s.mu.Lock()
	was := s.lastErr != nil
	s.lastErr = nil
	s.mu.Unlock()
	if was {
		s.observe(broker.Observation{Kind: broker.ObservedConnected})
	}
}

func (s *Subscriber) observe(o broker.Observation) {
	observe(context.Background(), s.opts.observer, "kafka subscriber", s.topic, "", o)
}

type groupHandler struct{ s *Subscriber }

func (g groupHandler) Setup(sarama.ConsumerGroupSession) error { g.s.sessionUp(); return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (g groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	c := g.s.startCaller()
	defer c.stop()
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !g.s.handle(sess.Context(), c, m) {
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
func (s *Subscriber) handle(session context.Context, c *caller, m *sarama.ConsumerMessage) bool {
	d := toDelivery(m, s.groupID)
	var first time.Time
	for attempt := 1; ; attempt++ {
		d.Attempt = attempt
		err, ok := c.call(d)
		if !ok {
			return false // Close gave up on the handler
		}
		if err == nil {
			s.stats.handled.Add(1)
			return true
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		if adapter.Outcome(err, attempt, s.opts.maxAttempts) {
			return s.deadLetter(session, d, adapter.DeadLetterOf(d, err, attempt, first, now), err)
		}
		wait := s.retry.Delay(attempt)
		s.stats.retried.Add(1)
		s.observe(broker.Observation{Kind: broker.ObservedRetry, MessageID: d.ID, MessageName: d.Name,
			Attempt: attempt, Delay: wait, Value: wait.Seconds(), Err: err, Category: broker.CategoryHandlerFailed})
		s.log.Warn("kafka: handler failed, retrying", "source", d.Source, "id", d.ID, "attempt", attempt, "retry_in", wait, "err", err)
		if !s.pause(session, wait) {
			return false
		}
	}
}

// caller runs a claim's handler calls on a goroutine of its own, one
// after another, so that a Close whose ctx ended need not wait for a
// handler that ignores its ctx; one goroutine per claim, not per record.
type caller struct {
	s     *Subscriber
	calls chan broker.Delivery
	res   chan error // buffered: a call abandoned by Close still ends
}

func (s *Subscriber) startCaller() *caller {
	c := &caller{s: s, calls: make(chan broker.Delivery), res: make(chan error, 1)}
	go func() {
		for d := range c.calls {
			err := adapter.CallHandler(s.handlers, s.handler, d)
			s.stats.inflight.Add(-1)
			c.res <- err
		}
	}()
	return c
}

// stop ends the goroutine once its handler call, if any, returns.
func (c *caller) stop() { close(c.calls) }

// call runs the handler on d. ok is false when Close gave up first; the
// goroutine then ends with the handler.
func (c *caller) call(d broker.Delivery) (err error, ok bool) {
	c.s.stats.inflight.Add(1)
	c.calls <- d // never blocks long: the goroutine waits for work between calls
	select {
	case err := <-c.res:
		return err, true
	case <-c.s.abandon:
		return nil, false
	}
}

// pause waits d unless the session ends or Close gives up first.
func (s *Subscriber) pause(session context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-session.Done():
		return false
	case <-s.abandon:
		return false
	case <-t.C:
		return true
	}
}

// deadLetter produces dl to <topic>.dlq, retrying until the producer
// acknowledges it or the session ends (the record is then not marked).
func (s *Subscriber) deadLetter(session context.Context, d broker.Delivery, dl broker.DeadLetter, cause error) bool {
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(s.handlers, deadLetterTimeout)
		err := s.dlq.Publish(ctx, dl.Annotated())
		cancel()
		if err == nil {
			s.stats.deadLettered.Add(1)
			s.observe(broker.Observation{Kind: broker.ObservedDeadLetter, MessageID: d.ID, MessageName: d.Name,
				Attempt: dl.Attempts, Err: cause, Category: dl.Category})
			s.log.Warn("kafka: record dead-lettered", "source", d.Source, "id", d.ID, "attempts", dl.Attempts,
				"category", dl.Category, "to", s.dlq.topic, "err", cause)
			return true
		}
		s.log.Error("kafka: cannot dead-letter a record, retrying", "source", d.Source, "id", d.ID, "to", s.dlq.topic, "err", err)
		if !s.pause(session, s.retry.Delay(try)) {
			return false
		}
	}
}
