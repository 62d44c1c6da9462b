package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
)

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

// ConsumeClaim hands a partition's records to the claim's lanes (see
// claim.go) until the claim ends: a rebalance, Close, or Close giving up.
func (g groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, cl sarama.ConsumerGroupClaim) error {
	c, err := g.s.newClaim(sess, cl.Topic(), cl.Partition())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(sess.Context())
	stop := context.AfterFunc(g.s.handlers, cancel) // Close gave up
	if !c.inline {
		c.feed(ctx, cl.Messages())
		stop()
		cancel()
		c.end()
		return nil
	}
	// feed runs handlers: it may be stuck in one when the session ends.
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		c.feed(ctx, cl.Messages())
	}()
	select {
	case <-fed:
	case <-ctx.Done():
	}
	stop()
	cancel()
	if c.end() {
		<-fed // its handler finished: feed returns at once (ctx ended)
	} // else feed ends with its handler, which Close joins (straggle)
	return nil
}
