package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// state is where a Broker or Subscriber is in its life: connecting (only
// with WithLazyConnect), open, closing (Close has begun), closed.
type state int

const (
	stateConnecting state = iota
	stateOpen
	stateClosing
	stateClosed
)

// Broker produces to Kafka through one idempotent sarama AsyncProducer. It
// implements [broker.Broker] and [broker.HealthChecker]; see the package
// doc for the guarantees.
type Broker struct {
	// Locks: mu, hmu and the connector's mutex are never held together,
	// nor while sending on a channel or calling the Observer. Close joins
	// every goroutine, the background connect loop (connectGo) and the
	// result loop (loopDone), unless its ctx ends first.

	opts      publisherOptions
	topic     string
	component string
	log       *slog.Logger
	conn      *connector[producerLink]

	mu      sync.RWMutex // guards state and link against Publish's check
	state   state
	link    producerLink   // set once, when connected; then read without mu
	sending sync.WaitGroup // Publish calls between the state check and the hand-over

	closing   lifecycle.Closing
	ready     chan struct{} // closed when link is set
	gaveUp    chan struct{} // closed when Close's ctx ended before every outcome was known
	connectGo chan struct{} // closed when the background connect loop ended (WithLazyConnect)
	stopDial  context.CancelFunc
	loopDone  chan struct{} // closed when the result loop drained the producer and closed the client
	closeErr  error         // the client's Close error, written before loopDone closes

	hmu     sync.Mutex
	lastErr error       // the last failure that says the cluster is unreachable; nil after a success
	down    atomic.Bool // lastErr != nil, for the result loop's fast path

	stats struct{ published, acked, failed, inflight, waiting atomic.Int64 }
}

// result carries a record's outcome from the result loop to its Publish
// call; the record's Metadata holds it, so that a record this Broker did
// not produce is recognised and ignored.
type result chan error

// New connects to the cluster cfg describes (cfg.Addrs() as bootstrap
// brokers, cfg.ClientID, cfg.Topic) and returns a Broker ready to produce.
// ctx bounds connecting only, not the Broker's life. New retries reaching
// the cluster until ctx ends (then the error matches broker.ErrUnavailable
// and ctx.Err()). A bad option or sarama configuration (broker.ErrInvalid),
// failed authentication (broker.ErrUnauthorized), or a topic that does not
// exist with one topic for all events (broker.ErrUnroutable) fails at once
// with an error naming what to change. With [WithLazyConnect] New returns
// as soon as cfg and opts are checked, and connects in the background.
func New(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*Broker, error) {
	cfg, o, sc, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	dial := dialProducer(cfg.Addrs(), sc, cfg.Topic, !o.topicPerEvent)
	return start(ctx, o, cfg.Addrs(), cfg.Topic, "kafka publisher", dial)
}

// start makes a Broker over dial: connects now, or in the background with
// WithLazyConnect. Tests give it a fake dial.
func start(ctx context.Context, o publisherOptions, addrs []string, topic, component string, dial func() (producerLink, error)) (*Broker, error) {
	b := &Broker{
		opts: o, topic: topic, component: component, log: o.logger.With("component", component),
		ready: make(chan struct{}), gaveUp: make(chan struct{}), connectGo: make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	desc := topic
	if o.topicPerEvent {
		desc = "<event name>"
	}
	b.conn = newConnector(component, addrs, desc, o.connOptions, dial, func(l producerLink) { closeLink(l) })
	if !o.lazy {
		close(b.connectGo)
		l, err := b.conn.run(ctx, true)
		if err != nil {
			return nil, err
		}
		b.install(l) // the Broker is not shared yet: nothing can close it
		b.log.Info("kafka: connected", "brokers", addrs, "topic", desc, "attempts", b.conn.tried())
		return b, nil
	}
	dctx, cancel := context.WithCancel(context.Background())
	b.stopDial = cancel
	go func() {
		defer close(b.connectGo)
		if l, err := b.conn.run(dctx, false); err == nil && b.install(l) {
			b.log.Info("kafka: connected", "brokers", addrs, "topic", desc, "attempts", b.conn.tried())
		}
	}()
	b.log.Info("kafka: connecting in the background", "brokers", addrs, "topic", desc)
	return b, nil
}

// install makes l the Broker's producer and starts its result loop, unless
// Close has begun: then l is closed and install returns false.
func (b *Broker) install(l producerLink) bool {
	b.mu.Lock()
	if b.state != stateConnecting {
		b.mu.Unlock()
		closeLink(l)
		return false
	}
	b.link, b.state = l, stateOpen
	b.mu.Unlock()
	close(b.ready)
	go b.results(l)
	return true
}

// closeLink closes a producer that never got a record, then its client.
func closeLink(l producerLink) {
	l.producer.AsyncClose()
	for range l.producer.Successes() {
	}
	for range l.producer.Errors() {
	}
	_ = l.client.Close()
}

// results hands each record's outcome to its Publish call until the
// producer has drained after AsyncClose, then closes the client.
func (b *Broker) results(l producerLink) {
	defer close(b.loopDone)
	succ, errs := l.producer.Successes(), l.producer.Errors()
	for succ != nil || errs != nil {
		select {
		case m, ok := <-succ:
			if !ok {
				succ = nil
				continue
			}
			if res, ok := m.Metadata.(result); ok {
				b.stats.acked.Add(1)
				b.stats.inflight.Add(-1)
				b.up()
				deliver(res, nil)
			}
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if pe == nil || pe.Msg == nil {
				continue
			}
			if res, ok := pe.Msg.Metadata.(result); ok {
				b.stats.failed.Add(1)
				b.stats.inflight.Add(-1)
				err := produceErr(pe)
				if broker.IsRetryable(err) {
					b.unreachable(err)
				}
				deliver(res, err)
			}
		}
	}
	if err := l.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		b.closeErr = wrap(opClose, err, "close the client")
	}
}

// deliver hands a record's outcome to its Publish call. The channel holds
// one; a second outcome for the same record (sarama never sends one) is
// dropped rather than blocking the loop.
func deliver(res result, err error) {
	select {
	case res <- err:
	default:
	}
}

// produceErr maps a record's failure, naming its topic.
func produceErr(pe *sarama.ProducerError) error {
	if errors.Is(pe.Err, sarama.ErrUnknownTopicOrPartition) {
		return &broker.Error{Op: opPublish, Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("topic %q does not exist (or has no such partition): %w", pe.Msg.Topic, pe.Err)}
	}
	err := wrap(opPublish, pe.Err, "topic %q", pe.Msg.Topic)
	var be *broker.Error
	if errors.Is(err, broker.ErrUnavailable) && errors.As(err, &be) {
		// Handed to the producer and failed after its retries (a timeout,
		// not enough replicas after the append...): it may be written.
		be.Err = fmt.Errorf("%w: %w", broker.ErrOutcomeUnknown, be.Err)
	}
	return err
}

// up records a success: a cluster that was unreachable is back.
func (b *Broker) up() {
	if !b.down.Load() {
		return
	}
	b.hmu.Lock()
	was := b.lastErr != nil
	b.lastErr = nil
	b.down.Store(false)
	b.hmu.Unlock()
	if was {
		b.observe(broker.Observation{Kind: broker.ObservedConnected})
	}
}

// unreachable records a record that failed because the cluster could not
// be reached, after sarama's own retries.
func (b *Broker) unreachable(err error) {
	b.hmu.Lock()
	was := b.lastErr != nil
	b.lastErr = err
	b.down.Store(true)
	b.hmu.Unlock()
	if !was {
		b.observe(broker.Observation{Kind: broker.ObservedDisconnected, Err: err, Category: broker.CategoryUnavailable})
	}
}

func (b *Broker) observe(o broker.Observation) {
	observe(context.Background(), b.opts.observer, b.component, b.topic, "", o)
}

var errClosed = &broker.Error{Op: opPublish, Kind: broker.ErrClosed}

// Publish produces msg and waits for the acks=all acknowledgement. A ctx
// already done returns ctx.Err() as is. A ctx that ends before the record
// was handed to the producer (waiting for the connection with
// [WithLazyConnect]) returns an error matching broker.ErrUnavailable and
// ctx.Err(): the record was not sent. A ctx that ends after the hand-over
// returns one that also matches broker.ErrOutcomeUnknown: the record may
// still be written. See the package doc for the mapping and guarantees.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	b.mu.RLock()
	if b.state >= stateClosing {
		b.mu.RUnlock()
		return errClosed
	}
	var p producer
	if b.state == stateOpen {
		p = b.link.producer
	}
	b.sending.Add(1)
	b.mu.RUnlock()

	res := make(result, 1) // the result loop never blocks on it
	pm := b.record(msg, res)
	b.stats.waiting.Add(1)
	err := b.handOver(ctx, p, pm, msg.ID)
	b.stats.waiting.Add(-1)
	b.sending.Done()
	if err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("no acknowledgement for %s before the context ended: %w: %w", msg.ID, broker.ErrOutcomeUnknown, ctx.Err())}
	case <-b.gaveUp:
		return &broker.Error{Op: opPublish, Kind: broker.ErrClosed,
			Err: fmt.Errorf("Close gave up waiting for the acknowledgement of %s: %w: %w", msg.ID, broker.ErrUnavailable, broker.ErrOutcomeUnknown)}
	}
}

// handOver gives pm to the producer p, waiting for the connection first
// when p is nil. Only a nil return means the producer has the record.
func (b *Broker) handOver(ctx context.Context, p producer, pm *sarama.ProducerMessage, id string) error {
	if p == nil {
		select {
		case <-b.ready:
			p = b.link.producer
		case <-b.closing.Done():
			return errClosed
		case <-ctx.Done():
			return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
				Err: fmt.Errorf("record %s not sent: %s: %w", id, b.conn.lastError(), ctx.Err())}
		}
	}
	b.stats.inflight.Add(1) // before the send: the result loop may count it out at once
	select {
	case p.Input() <- pm:
		b.stats.published.Add(1)
		return nil
	case <-b.closing.Done():
		b.stats.inflight.Add(-1)
		return errClosed
	case <-ctx.Done():
		b.stats.inflight.Add(-1)
		return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("record %s not sent: the producer did not take it: %w", id, ctx.Err())}
	}
}

// Close stops accepting records (Publish returns broker.ErrClosed), lets
// the producer flush and waits for every outstanding acknowledgement, then
// closes the client; with [WithLazyConnect] it stops connecting first. If
// ctx ends first it returns ctx.Err(), and each Publish still waiting
// returns an error matching broker.ErrClosed, broker.ErrUnavailable and
// broker.ErrOutcomeUnknown; the producer goes on flushing in the
// background (bounded by sarama's retries) and closes the client when done.
// A second Close returns nil.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if !b.closing.Begin() {
		b.mu.Unlock()
		return nil
	}
	st := b.state
	b.state = stateClosing
	b.mu.Unlock()
	if b.stopDial != nil {
		b.stopDial()
	}
	// Every Publish left the hand-over: Input may close. A background
	// connect that ends late sees the state and closes its connection.
	b.sending.Wait()
	if !wait(ctx, b.connectGo) {
		close(b.gaveUp)
		return ctx.Err()
	}
	if st == stateOpen {
		b.link.producer.AsyncClose()
		if !wait(ctx, b.loopDone) {
			close(b.gaveUp)
			return ctx.Err()
		}
	}
	b.mu.Lock()
	b.state = stateClosed
	b.mu.Unlock()
	b.log.Info("kafka: closed", "stats", b.Stats())
	return b.closeErr
}

// wait reports whether done is closed, waiting until it is or ctx ends;
// when both are, done wins.
func wait(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// Health reports whether the Broker can publish: what a readiness probe
// calls. It returns nil once connected, unless the last record that failed
// did so because the cluster could not be reached (and no record succeeded
// since): then it asks the cluster for metadata, within ctx, and returns
// nil if it answers (the outage is over) or an error matching
// broker.ErrUnavailable naming the last error. While [WithLazyConnect] is
// still connecting it returns such an error at once; after Close, one
// matching broker.ErrClosed.
func (b *Broker) Health(ctx context.Context) error {
	b.mu.RLock()
	st := b.state
	b.mu.RUnlock()
	switch st {
	case stateConnecting:
		return b.conn.notReady()
	case stateClosing, stateClosed:
		return errClosed
	}
	b.hmu.Lock()
	last := b.lastErr
	b.hmu.Unlock()
	if last == nil {
		return nil
	}
	if probe := b.link.probe; probe != nil {
		res := make(chan error, 1)
		go func() { res <- probe() }()
		select {
		case err := <-res:
			if err == nil {
				b.up()
				return nil
			}
		case <-ctx.Done():
		}
	}
	return &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("cluster not reachable: last record failed: %v", last)}
}

// Stats counts what happened since New.
type Stats struct {
	// Published counts records handed to the producer.
	Published int64
	// Acked counts records the cluster acknowledged (acks=all).
	Acked int64
	// Failed counts records that failed after sarama's retries.
	Failed int64
	// InFlight counts records handed to the producer (or being handed
	// over) whose outcome is not known yet.
	InFlight int64
	// Waiting counts Publish calls waiting to hand their record over: for
	// the connection ([WithLazyConnect]) or for the producer to take it.
	Waiting int64
}

// Stats returns the counters.
func (b *Broker) Stats() Stats {
	return Stats{Published: b.stats.published.Load(), Acked: b.stats.acked.Load(), Failed: b.stats.failed.Load(),
		InFlight: b.stats.inflight.Load(), Waiting: b.stats.waiting.Load()}
}
