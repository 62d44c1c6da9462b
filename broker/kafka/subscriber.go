package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lanes"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Subscriber consumes cfg.Topic in a sarama consumer group and hands each
// record to a broker.Handler. It implements broker.Subscriber and
// broker.HealthChecker.
//
// Each partition claimed runs up to [WithConcurrency] handler calls at
// once (default 1), never two of one record key at once, each key's
// records in partition order. Offsets are marked (and committed, every
// second and on Close or rebalance) only up to the lowest record not yet
// finished: a record counts as finished once its handler succeeded or it
// was dead-lettered. A failing handler is retried with [WithRetryBackoff]
// while its key waits (the partition's other keys go on); after
// [WithMaxAttempts], or at once for an error matching broker.ErrInvalid,
// the record is produced to "<topic>.dlq" (which must exist) with the
// broker.HeaderDeadLetter* reason headers and [HeaderOriginalTopic],
// [HeaderOriginalPartition] and [HeaderOriginalOffset], and its key moves
// on. If the partition is taken away meanwhile (rebalance, Close), what
// was not finished is not marked and its new owner handles it again: at
// least once.
type Subscriber struct {
	// Locks: mu and the connector's mutex are never held together, nor
	// while a handler runs, while sending on a channel or calling the
	// Observer. Close joins the run loop (done), and with it every claim's
	// lanes, unless its ctx ends first; a lanes worker whose handler Close
	// gave up on ends with that handler.

	opts        subscriberOptions
	topic       string
	groupID     string
	handler     broker.Handler
	log         *slog.Logger
	conn        *connector[groupLink]
	dlq         *Broker
	retry       backoff.Policy            // between a handler's attempts
	rejoin      func(n int) time.Duration // before the n-th Consume after consecutive failures
	revokeWait  time.Duration             // how long a claim ended by a rebalance waits for its handlers
	cooperative bool                      // the group's rebalance protocol is cooperative (claims revoked by closing their messages only)

	mu         sync.Mutex
	state      state
	lastErr    error // the last consumer-group session's failure; nil once one is set up
	closing    lifecycle.Closing
	stragglers []*lanes.Dispatcher[record] // claims' lanes left running after a rebalance timeout

	stop           context.Context // ended by Close: stop connecting and fetching
	stopCancel     context.CancelFunc
	handlers       context.Context // the handlers' ctx, ended when Close gives up (or has ended)
	cancelHandlers context.CancelFunc
	done           chan struct{} // closed when the run loop ended: group left, client closed
	sessions       atomic.Int64  // consumer-group sessions set up

	stats struct{ handled, retried, deadLettered, inflight atomic.Int64 }
}

// NewSubscriber joins consumer group groupID on cfg.Topic and starts
// handing records to h. ctx bounds connecting only (as in [New]); with
// [WithLazyConnect] NewSubscriber returns at once and joins in the
// background. The topic and "<topic>.dlq" must exist: otherwise the error
// matches broker.ErrUnroutable and names the topic.
func NewSubscriber(ctx context.Context, cfg broker.Config, groupID string, h broker.Handler, opts ...SubscriberOption) (*Subscriber, error) {
	switch {
	case h == nil:
		return nil, &broker.Error{Op: opSubscribe, Kind: broker.ErrInvalid, Err: errors.New("handler is nil")}
	case groupID == "":
		return nil, &broker.Error{Op: opSubscribe, Kind: broker.ErrInvalid, Err: errors.New("groupID is empty")}
	}
	cfg, o, sc, err := subscriberSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	s := newSubscriber(o, cfg.Topic, groupID, h, cfg.Addrs(), dialGroup(cfg.Addrs(), sc, cfg.Topic, groupID))
	if t := sc.Consumer.Group.Rebalance.Timeout; t > 0 {
		s.revokeWait = t
	}
	s.cooperative = cooperative(sc.Consumer.Group.Rebalance.GroupStrategies)
	var link *groupLink
	if !o.lazy {
		l, err := s.conn.run(ctx, true)
		if err != nil {
			return nil, err
		}
		link = &l
	}
	po := defaultPublisher()
	po.connOptions = o.connOptions
	var dlq *Broker
	psc, err := producerConfig(cfg, po)
	if err == nil {
		dlq, err = deadLetterBroker(ctx, cfg, po, psc, "kafka subscriber dead letters")
	}
	if err != nil {
		if link != nil {
			closeGroup(*link)
		}
		return nil, err
	}
	s.dlq = dlq
	s.begin(link)
	return s, nil
}

// newSubscriber makes a Subscriber over dial; begin starts it once its dlq
// is set. Tests give it a fake dial and dead-letter producer.
func newSubscriber(o subscriberOptions, topic, groupID string, h broker.Handler, addrs []string, dial func() (groupLink, error)) *Subscriber {
	s := &Subscriber{
		opts: o, topic: topic, groupID: groupID, handler: h,
		log:        o.logger.With("component", "kafka subscriber"),
		retry:      backoff.Policy{Initial: o.retryMin, Max: o.retryMax},
		rejoin:     backoff.Policy{Initial: o.connectMin, Max: o.connectMax}.Delay,
		revokeWait: defaultRevokeWait,
		done:       make(chan struct{}),
	}
	s.conn = newConnector("kafka subscriber", addrs, topic, o.connOptions, dial, closeGroup)
	s.stop, s.stopCancel = context.WithCancel(context.Background())
	s.handlers, s.cancelHandlers = context.WithCancel(context.Background())
	return s
}

// begin starts the run loop on link, or connects first when link is nil.
func (s *Subscriber) begin(link *groupLink) {
	if link != nil {
		s.state = stateOpen
		s.log.Info("kafka: consuming", "topic", s.topic, "group", s.groupID, "attempts", s.conn.tried())
	} else {
		s.log.Info("kafka: joining in the background", "topic", s.topic, "group", s.groupID)
	}
	go s.run(link)
}

func closeGroup(l groupLink) {
	_ = l.group.Close()
	_ = l.client.Close()
}

// Close stops fetching, lets the running handlers finish, marks their
// records, commits the marked offsets, leaves the group and closes the
// dead-letter producer. Records not started, or waiting for a retry, are
// left unmarked: the group delivers them again. If ctx ends first, Close
// cancels the handlers' ctx, stops waiting for them and returns ctx.Err()
// at once, even if a handler ignores its ctx: that handler's record is not
// marked, so the group delivers it again (here or to another member); the
// group is left in the background, and no goroutine of the Subscriber
// outlives that handler. A second Close returns nil.
func (s *Subscriber) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing.Begin() {
		s.mu.Unlock()
		return nil
	}
	s.state = stateClosing
	s.mu.Unlock()
	s.stopCancel()
	var err error
	if !wait(ctx, s.done) || !s.joinStragglers(ctx) {
		err = ctx.Err()
	}
	s.cancelHandlers() // gives up on what still runs: nothing, unless ctx ended
	if s.dlq != nil {
		if derr := s.dlq.Close(ctx); err == nil && derr != nil {
			err = derr
		}
	}
	if err == nil {
		s.mu.Lock()
		s.state = stateClosed
		s.mu.Unlock()
	}
	s.log.Info("kafka: subscriber closed", "topic", s.topic, "group", s.groupID, "stats", s.Stats(), "err", err)
	return err
}

// straggle keeps the lanes of a claim whose handlers outlived the
// rebalance timeout, for Close to join.
func (s *Subscriber) straggle(d *lanes.Dispatcher[record]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stragglers = append(s.stragglers, d)
}

// joinStragglers waits for the stragglers' handlers, within ctx (false if
// it ended first).
func (s *Subscriber) joinStragglers(ctx context.Context) bool {
	s.mu.Lock()
	ds := s.stragglers
	s.stragglers = nil
	s.mu.Unlock()
	for _, d := range ds {
		if d.Close(ctx) != nil {
			return false
		}
	}
	return true
}

// Health reports whether the Subscriber can consume: what a readiness
// probe calls. It returns nil once connected (the cluster reached, the
// topic found) while no consumer-group session has failed since the last
// one was set up, and the dead-letter producer is healthy. Otherwise it
// returns an error matching broker.ErrUnavailable that names the last
// error: while connecting ([WithLazyConnect]), after a failed session until
// the next one is set up, or when the dead-letter producer is not healthy;
// after Close, one matching broker.ErrClosed. It sends nothing to the
// cluster and does not block.
func (s *Subscriber) Health(ctx context.Context) error {
	s.mu.Lock()
	st, last := s.state, s.lastErr
	s.mu.Unlock()
	switch {
	case st == stateConnecting:
		return s.conn.notReady()
	case st >= stateClosing:
		return &broker.Error{Op: opConsume, Kind: broker.ErrClosed}
	case last != nil:
		return &broker.Error{Op: opConsume, Kind: healthKind(last),
			Err: fmt.Errorf("consumer group %q on topic %q: last session failed: %v", s.groupID, s.topic, last)}
	}
	if err := s.dlq.Health(ctx); err != nil {
		return &broker.Error{Op: opDeadLetter, Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("topic %q: %v", s.dlq.topic, err)}
	}
	return nil
}

// SubscriberStats counts what a Subscriber did since NewSubscriber.
type SubscriberStats struct {
	// Handled counts records whose handler succeeded.
	Handled int64
	// Retried counts handler failures followed by another attempt.
	Retried int64
	// DeadLettered counts records produced to "<topic>.dlq".
	DeadLettered int64
	// InFlight counts handler calls running now (in every partition).
	InFlight int64
}

// Stats returns the counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{Handled: s.stats.handled.Load(), Retried: s.stats.retried.Load(),
		DeadLettered: s.stats.deadLettered.Load(), InFlight: s.stats.inflight.Load()}
}
