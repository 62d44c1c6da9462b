package kafka

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lanes"
)

// A partition claim's records run on lanes by record key (internal/lanes):
// up to WithConcurrency handler calls at once, one per key, each key in
// partition order. The claim's goroutine (feed) reads the records and adds
// them; the lanes' workers handle, retry and dead-letter them and settle
// each finished one, which moves the partition's commit point (a
// lanes.Watermark: the lowest offset not yet finished) and marks it.
//
// At WithConcurrency(1) (and an eager rebalance protocol, sarama's
// default) feed runs on a goroutine of its own and hands each record to
// lanes.Dispatcher.Run, which handles it on feed's goroutine while the
// lanes hold nothing: no hand-over to a worker per record. A record whose
// first attempt fails waits for its retry on its lane, and the records
// after it go to the lanes' worker until they are empty again, so a key
// waiting for a retry still holds up no other key. ConsumeClaim waits for
// feed or for the session's end, whichever comes first, then for the
// handlers as end allows: a stuck handler keeps feed, not the rebalance.
// (A cooperative rebalance revokes a claim by closing its messages only,
// which feed cannot see while it runs a handler: there every record goes
// to the worker.)
//
// Lock order: claim.mu, then sarama's offset manager (MarkOffset). The
// dispatcher's lock is never held while claim.mu is taken (lanes calls
// Settle without it).

const (
	// minClaimCapacity is the least number of a partition's records its
	// lanes hold (waiting, retrying or running): the next records are
	// fetched while the handlers run. It is 4 × WithConcurrency when more.
	minClaimCapacity = 64
	// minUncommitted bounds the records of a partition past its commit
	// point (2 × the capacity when more): finished records above one that
	// is still retrying. The partition's next records wait beyond it, so
	// a crash or a rebalance hands at most that many records, plus those
	// finished since the last commit, to the partition's next owner again.
	minUncommitted = 1024
	// deadLetterTimeout bounds one attempt to produce a record to
	// <topic>.dlq.
	deadLetterTimeout = 30 * time.Second
	// defaultRevokeWait is how long a claim that ends for a rebalance
	// waits for its running handlers when the sarama configuration does
	// not say (Consumer.Group.Rebalance.Timeout).
	defaultRevokeWait = 60 * time.Second
)

type record = *sarama.ConsumerMessage

// claim is one partition claim of one consumer-group session.
type claim struct {
	s         *Subscriber
	sess      sarama.ConsumerGroupSession
	topic     string
	partition int32
	lanes     *lanes.Dispatcher[record]
	inline    bool // feed runs handlers itself (lanes.Dispatcher.Run)
	window    int  // most records started and not yet below the commit point

	mu      sync.Mutex
	wm      lanes.Watermark
	moved   chan struct{} // closed (and replaced) when the commit point moves while feed waits
	waiting bool          // feed waits on moved
}

func (s *Subscriber) newClaim(sess sarama.ConsumerGroupSession, topic string, partition int32) (*claim, error) {
	capacity := max(minClaimCapacity, 4*s.opts.concurrency)
	c := &claim{s: s, sess: sess, topic: topic, partition: partition,
		window: max(minUncommitted, 2*capacity), moved: make(chan struct{}),
		inline: s.opts.concurrency == 1 && !s.cooperative}
	d, err := lanes.New(lanes.Config[record]{
		Workers:          s.opts.concurrency,
		Capacity:         capacity,
		MaxAttempts:      s.opts.maxAttempts,
		Backoff:          s.retry,
		Handler:          s.call,
		Settle:           c.settle,
		DeadLetter:       s.deadLetter,
		Retrying:         s.retrying,
		DeadLetterFailed: s.deadLetterFailed,
		Context:          s.handlers,
	})
	if err != nil {
		return nil, wrap(opConsume, err, "topic %q partition %d", topic, partition)
	}
	c.lanes = d
	return c, nil
}

// feed adds the claim's records to its lanes, in offset order, until msgs
// closes (the claim was revoked) or ctx ends (the session ended, or Close
// gave up). It waits while the lanes are full or the partition has window
// records past its commit point. (A cooperative rebalance revokes a claim
// by closing msgs only, which feed sees once it reads again: while it
// waits for room, the revocation waits for a record to finish.)
func (c *claim) feed(ctx context.Context, msgs <-chan *sarama.ConsumerMessage) {
	for c.room(ctx) {
		var m *sarama.ConsumerMessage
		select {
		case r, ok := <-msgs:
			if !ok {
				return
			}
			m = r
		case <-ctx.Done():
			return
		}
		d := toDelivery(m, c.s.groupID)
		c.mu.Lock()
		err := c.wm.Add(m.Offset)
		c.mu.Unlock()
		if err != nil { // sarama hands a partition's records over in offset order
			c.s.log.Error("kafka: record out of order, ending the claim", "source", d.Source, "err", err)
			return
		}
		// An item Add refuses (ctx ended) stays unfinished: the commit
		// point stops below it and the next owner handles it.
		it := lanes.Item[record]{Key: d.Key, Delivery: d, Value: m}
		if c.inline {
			err = c.lanes.Run(ctx, it)
		} else {
			err = c.lanes.Add(ctx, it)
		}
		if err != nil {
			return
		}
	}
}

// room waits until fewer than window records are past the commit point,
// or ctx ends (false).
func (c *claim) room(ctx context.Context) bool {
	c.mu.Lock()
	for c.wm.Pending() >= c.window {
		c.waiting = true
		moved := c.moved
		c.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return false
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return true
}

// settle moves the commit point past a handled or dead-lettered record and
// marks it. An abandoned record (the claim ended first) is left for the
// partition's next owner: the commit point stays below it.
func (c *claim) settle(it *lanes.Item[record], o lanes.Outcome) {
	switch o {
	case lanes.Abandoned:
		return
	case lanes.Handled:
		c.s.stats.handled.Add(1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	commit, moved := c.wm.Done(it.Value.Offset)
	if !moved {
		return
	}
	c.sess.MarkOffset(c.topic, c.partition, commit, "") // the next offset to read
	if c.waiting {
		close(c.moved)
		c.moved, c.waiting = make(chan struct{}), false
	}
}

// end closes the claim's lanes: the records not started (or waiting for a
// retry) are abandoned, the running handlers finish and are settled (their
// offsets marked before sarama commits the session's). For a rebalance the
// wait is bounded by the group's rebalance timeout (the coordinator has
// moved on by then); for Close, by Close's ctx. It says whether every
// handler finished.
func (c *claim) end() bool {
	ctx := c.s.handlers // ends when Close gives up
	if c.s.stop.Err() == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.s.revokeWait)
		defer cancel()
	}
	c.s.log.Debug("kafka: claim ending", "topic", c.topic, "partition", c.partition, "running", c.lanes.Stats().Running)
	err := c.lanes.Close(ctx)
	if err != nil && c.s.handlers.Err() == nil {
		c.s.log.Warn("kafka: handlers still running after the rebalance timeout: their records are handled again by the partition's next owner",
			"topic", c.topic, "partition", c.partition, "wait", c.s.revokeWait, "running", c.lanes.Stats().Running)
		c.s.straggle(c.lanes)
	} // else Close gave up on them: they end on their own
	return err == nil
}

// cooperative says whether a group with these balance strategies uses
// the cooperative rebalance protocol: every strategy supports it (as
// sarama decides).
func cooperative(strategies []sarama.BalanceStrategy) bool {
	if len(strategies) == 0 {
		return false
	}
	for _, st := range strategies {
		p, ok := st.(sarama.RebalanceProtocolBalanceStrategy)
		if !ok || !slices.Contains(p.SupportedProtocols(), sarama.RebalanceProtocolCooperative) {
			return false
		}
	}
	return true
}

// call runs the handler, counting it in flight.
func (s *Subscriber) call(ctx context.Context, d broker.Delivery) error {
	s.stats.inflight.Add(1)
	defer s.stats.inflight.Add(-1)
	return s.handler(ctx, d)
}

func (s *Subscriber) retrying(it *lanes.Item[record], err error, attempt int, wait time.Duration) {
	d := &it.Delivery
	s.stats.retried.Add(1)
	s.observe(broker.Observation{Kind: broker.ObservedRetry, MessageID: d.ID, MessageName: d.Name,
		Attempt: attempt, Delay: wait, Value: wait.Seconds(), Err: err, Category: broker.CategoryHandlerFailed})
	s.log.Warn("kafka: handler failed, retrying", "source", d.Source, "id", d.ID, "key", d.Key,
		"attempt", attempt, "retry_in", wait, "err", err)
}

// deadLetter produces dl to <topic>.dlq, with where the record came from.
// An error makes the lanes try again after the backoff, holding the key.
func (s *Subscriber) deadLetter(ctx context.Context, it *lanes.Item[record], dl broker.DeadLetter, cause error) error {
	m := dl.Annotated()
	m.Headers[HeaderOriginalTopic] = it.Value.Topic
	m.Headers[HeaderOriginalPartition] = strconv.FormatInt(int64(it.Value.Partition), 10)
	m.Headers[HeaderOriginalOffset] = strconv.FormatInt(it.Value.Offset, 10)
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	if err := s.dlq.Publish(ctx, m); err != nil {
		return err
	}
	d := &it.Delivery
	s.stats.deadLettered.Add(1)
	s.observe(broker.Observation{Kind: broker.ObservedDeadLetter, MessageID: d.ID, MessageName: d.Name,
		Attempt: dl.Attempts, Err: cause, Category: dl.Category})
	s.log.Warn("kafka: record dead-lettered", "source", d.Source, "id", d.ID, "key", d.Key, "attempts", dl.Attempts,
		"category", dl.Category, "to", s.dlq.topic, "err", cause)
	return nil
}

func (s *Subscriber) deadLetterFailed(it *lanes.Item[record], err error, wait time.Duration) {
	s.log.Error("kafka: cannot dead-letter a record, retrying", "source", it.Delivery.Source, "id", it.Delivery.ID,
		"to", s.dlq.topic, "retry_in", wait, "err", err)
}
