package kafka

import (
	"context"
	"errors"
	"strconv"
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

// claimQueue is how many records of one partition may wait for, or be in,
// its handler: the claim's goroutine fetches and marks while the worker
// handles, so the handler never waits for the hand-over of the next record.
const claimQueue = 64

// ConsumeClaim feeds a partition's records, in order, to one worker
// goroutine that handles them one at a time, and marks each record once it
// was handled (or dead-lettered), in order. When the claim ends (Close, a
// rebalance) the worker finishes the record it is on, which is marked, and
// starts no other: the rest is left unmarked for the partition's next
// owner. When Close gives up, ConsumeClaim returns at once and the worker
// ends with its handler.
func (g groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	s := g.s
	w := s.startWorker(sess.Context())
	msgs := claim.Messages()
	pending := 0 // sent to the worker, outcome not yet received
	for {
		in := msgs
		if pending == claimQueue {
			in = nil
		}
		select {
		case m, ok := <-in:
			if !ok {
				return w.finish(sess)
			}
			w.work <- m // never blocks: pending < claimQueue
			pending++
		case r := <-w.done:
			pending--
			if !r.ok {
				return w.finish(sess) // partition lost or closing: not marked, handled again by its next owner
			}
			sess.MarkMessage(r.m, "")
		case <-sess.Context().Done():
			return w.finish(sess)
		case <-s.abandon:
			close(w.quit)
			return nil
		}
	}
}

// claimWorker handles one claim's records on a goroutine of its own.
type claimWorker struct {
	s      *Subscriber
	work   chan *sarama.ConsumerMessage // buffered claimQueue
	done   chan handled                 // buffered claimQueue: the worker never blocks on it
	quit   chan struct{}                // closed: start no other record
	exited chan struct{}
}

// handled is a record's outcome: ok when it may be marked.
type handled struct {
	m  *sarama.ConsumerMessage
	ok bool
}

func (s *Subscriber) startWorker(session context.Context) *claimWorker {
	w := &claimWorker{s: s, work: make(chan *sarama.ConsumerMessage, claimQueue), done: make(chan handled, claimQueue),
		quit: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		for {
			select {
			case <-w.quit:
				return
			case m := <-w.work:
				select {
				case <-w.quit: // quitting wins over waiting records
					return
				default:
				}
				ok := s.handle(session, m)
				w.done <- handled{m, ok}
				if !ok {
					return
				}
			}
		}
	}()
	return w
}

// finish stops the worker after its current record and marks what it
// handled, in order, until it has ended (or Close gives up).
func (w *claimWorker) finish(sess sarama.ConsumerGroupSession) error {
	close(w.quit)
	failed := false
	mark := func(r handled) {
		failed = failed || !r.ok
		if !failed {
			sess.MarkMessage(r.m, "")
		}
	}
	for {
		select {
		case r := <-w.done:
			mark(r)
		case <-w.exited:
			for {
				select {
				case r := <-w.done:
					mark(r)
				default:
					return nil
				}
			}
		case <-w.s.abandon:
			return nil
		}
	}
}

// handle runs the handler with retries, dead-lettering when they run out.
// It reports whether the record may be marked.
func (s *Subscriber) handle(session context.Context, m *sarama.ConsumerMessage) bool {
	d := toDelivery(m, s.groupID)
	var first time.Time
	for attempt := 1; ; attempt++ {
		d.Attempt = attempt
		s.stats.inflight.Add(1)
		err := adapter.CallHandler(s.handlers, s.log, s.handler, d)
		s.stats.inflight.Add(-1)
		select {
		case <-s.abandon:
			return false // Close gave up on the handler: its outcome is discarded
		default:
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
		m := dl.Annotated()
		m.Headers[HeaderOriginalTopic] = d.Origin.Destination
		m.Headers[HeaderOriginalPartition] = strconv.Itoa(int(d.Origin.Partition))
		m.Headers[HeaderOriginalOffset] = strconv.FormatInt(d.Origin.Offset, 10)
		err := s.dlq.Publish(ctx, m)
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
