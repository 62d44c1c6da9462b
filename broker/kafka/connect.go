package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// producer is what a Broker uses of sarama.AsyncProducer, so that tests can
// drive every ordering with a fake.
type producer interface {
	Input() chan<- *sarama.ProducerMessage
	Successes() <-chan *sarama.ProducerMessage
	Errors() <-chan *sarama.ProducerError
	AsyncClose()
}

// group is what a Subscriber uses of sarama.ConsumerGroup.
type group interface {
	Consume(ctx context.Context, topics []string, h sarama.ConsumerGroupHandler) error
	Errors() <-chan error
	Close() error
}

// producerLink is a connected producer and the client it runs on; the
// client is closed after the producer drained.
type producerLink struct {
	producer producer
	client   io.Closer
	// probe asks the cluster for metadata: whether it answers again after
	// an outage (Health). Nil in tests' fakes.
	probe func() error
}

// groupLink is a consumer group and the client it runs on; the client is
// closed after the group.
type groupLink struct {
	group  group
	client io.Closer
}

// logEvery is how often a failure that keeps repeating is logged at Warn.
const logEvery = 30 * time.Second

// connector reaches the cluster with backoff: the one connect loop of the
// publisher, the subscriber and the dead-letter sink, whether New waits for
// it or it runs in the background ([WithLazyConnect]).
type connector[T any] struct {
	component string // "kafka publisher"..., for logs and observations
	addrs     []string
	topic     string
	dial      func() (T, error)
	discard   func(T) // releases what a dial returned after its caller gave up
	policy    backoff.Policy
	log       *slog.Logger
	observer  broker.Observer
	now       func() time.Time

	mu       sync.Mutex
	attempts int   // failed attempts since the last success
	last     error // the last attempt's error, nil once connected
	tries    int   // the attempts the last successful run took
}

func newConnector[T any](component string, addrs []string, topic string, o connOptions, dial func() (T, error), discard func(T)) *connector[T] {
	return &connector[T]{
		component: component, addrs: addrs, topic: topic, dial: dial, discard: discard,
		policy: backoff.Policy{Initial: o.connectMin, Max: o.connectMax},
		log:    o.logger.With("component", component), observer: o.observer, now: time.Now,
	}
}

// humanMax is the longest wait between attempts that fail for a reason
// that needs a human (authentication, a missing topic): they go on, since
// an operator may fix it, but need not hammer the cluster.
const humanMax = 15 * time.Second

// run dials until it succeeds or ctx ends (then the error matches
// broker.ErrUnavailable and ctx.Err()). With stopOnFatal, an error that
// retrying cannot heal (authentication, configuration, a missing topic)
// is returned at once; without, it is retried like the others, with waits
// growing up to humanMax. Failures are logged, the first at once and then
// at most every logEvery.
func (c *connector[T]) run(ctx context.Context, stopOnFatal bool) (T, error) {
	var lastLog time.Time
	slow := backoff.Policy{Initial: c.policy.Initial, Max: max(c.policy.Max, humanMax)}
	for n := 1; ; n++ {
		v, err := c.attempt(ctx)
		if err == nil {
			c.connected(n)
			return v, nil
		}
		if ctx.Err() != nil {
			var zero T
			return zero, c.gaveUp(ctx, n, err)
		}
		c.failed(ctx, n, err)
		fatal := !broker.IsRetryable(err)
		if fatal && stopOnFatal {
			var zero T
			return zero, err
		}
		delay := c.policy.Delay(n)
		if fatal {
			delay = slow.Delay(n)
		}
		if now := c.now(); n == 1 || now.Sub(lastLog) >= logEvery {
			level := slog.LevelWarn
			if fatal {
				level = slog.LevelError
			}
			lastLog = now
			c.log.Log(ctx, level, "kafka: cluster not reachable, retrying", "brokers", c.addrs, "attempt", n, "retry_in", delay, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			var zero T
			return zero, c.gaveUp(ctx, n, err)
		case <-t.C:
		}
	}
}

// attempt dials once. sarama's dial takes no ctx: if ctx ends first,
// attempt returns ctx.Err() and a goroutine waits for the dial (bounded by
// Net.DialTimeout and Metadata.Retry) to discard what it returns.
func (c *connector[T]) attempt(ctx context.Context) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := c.dial()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil && c.discard != nil {
				c.discard(r.v)
			}
		}()
		var zero T
		return zero, ctx.Err()
	}
}

// gaveUp is the error of a connect whose ctx ended after n attempts, the
// last of which failed with err (ctx.Err() when the ctx ended during it).
func (c *connector[T]) gaveUp(ctx context.Context, n int, err error) error {
	if errors.Is(err, ctx.Err()) {
		c.mu.Lock()
		if c.last != nil {
			err = c.last
		}
		c.mu.Unlock()
	}
	return &broker.Error{Op: opConnect, Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("brokers %v not reachable after %d attempts (last error: %v): %w", c.addrs, n, err, ctx.Err())}
}

func (c *connector[T]) failed(ctx context.Context, n int, err error) {
	c.mu.Lock()
	c.attempts, c.last = n, err
	c.mu.Unlock()
	if n == 1 {
		c.observe(ctx, broker.Observation{Kind: broker.ObservedDisconnected, Attempt: n, Err: err, Category: broker.Category(err)})
	}
}

func (c *connector[T]) connected(n int) {
	c.mu.Lock()
	c.attempts, c.last, c.tries = 0, nil, n
	c.mu.Unlock()
	c.observe(context.Background(), broker.Observation{Kind: broker.ObservedConnected, Attempt: n})
}

// tried is how many attempts the last successful run took, for logs.
func (c *connector[T]) tried() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tries
}

// notReady is Health's answer while the connector has not succeeded yet:
// it matches broker.ErrUnauthorized when the last attempt was refused its
// credentials (a human must fix them; the connector keeps trying),
// broker.ErrUnavailable otherwise.
func (c *connector[T]) notReady() error {
	c.mu.Lock()
	n, last := c.attempts, c.last
	c.mu.Unlock()
	if last == nil {
		return &broker.Error{Op: opConnect, Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("connecting to brokers %v", c.addrs)}
	}
	return &broker.Error{Op: opConnect, Kind: healthKind(last),
		Err: fmt.Errorf("brokers %v not reachable after %d attempts: last error: %w", c.addrs, n, last)}
}

// healthKind is the category of Health's error after last: the cluster
// refused the credentials (broker.ErrUnauthorized), or anything else
// (broker.ErrUnavailable).
func healthKind(last error) error {
	if errors.Is(last, broker.ErrUnauthorized) {
		return broker.ErrUnauthorized
	}
	return broker.ErrUnavailable
}

// lastError is the last attempt's error text, for errors that must not
// take on its category.
func (c *connector[T]) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return "not connected yet"
	}
	return "not connected yet, last error: " + c.last.Error()
}

func (c *connector[T]) observe(ctx context.Context, o broker.Observation) {
	observe(ctx, c.observer, c.component, c.topic, strings.Join(c.addrs, ","), o)
}

// observe fills in what every observation of this adapter carries.
func observe(ctx context.Context, to broker.Observer, component, topic, addr string, o broker.Observation) {
	if to == nil {
		return
	}
	o.Component, o.System, o.Destination = component, "kafka", topic
	if o.Address == "" {
		o.Address = addr
	}
	to.Observe(ctx, o)
}

// dialProducer returns the dial function of a publisher: a client, the
// topic checked (unless each event has its own), an idempotent producer.
func dialProducer(addrs []string, sc *sarama.Config, topic string, check bool) func() (producerLink, error) {
	return func() (producerLink, error) {
		client, err := sarama.NewClient(addrs, sc)
		if err != nil {
			return producerLink{}, wrap(opConnect, err, "brokers %v", addrs)
		}
		if check {
			if err := checkTopic(client, topic); err != nil {
				_ = client.Close()
				return producerLink{}, err
			}
		}
		p, err := sarama.NewAsyncProducerFromClient(client)
		if err != nil {
			_ = client.Close()
			return producerLink{}, wrap(opConnect, err, "start the producer")
		}
		probe := func() error {
			if check {
				return client.RefreshMetadata(topic)
			}
			return client.RefreshMetadata()
		}
		return producerLink{producer: p, client: client, probe: probe}, nil
	}
}

// dialGroup returns the dial function of a subscriber: a client, the topic
// checked, the consumer group.
func dialGroup(addrs []string, sc *sarama.Config, topic, groupID string) func() (groupLink, error) {
	return func() (groupLink, error) {
		client, err := sarama.NewClient(addrs, sc)
		if err != nil {
			return groupLink{}, wrap(opConnect, err, "brokers %v", addrs)
		}
		if err := checkTopic(client, topic); err != nil {
			_ = client.Close()
			return groupLink{}, err
		}
		g, err := sarama.NewConsumerGroupFromClient(groupID, client)
		if err != nil {
			_ = client.Close()
			return groupLink{}, wrap(opConnect, err, "join consumer group %q", groupID)
		}
		return groupLink{group: g, client: client}, nil
	}
}

type partitionLister interface {
	Partitions(topic string) ([]int32, error)
}

func checkTopic(client partitionLister, topic string) error {
	_, err := client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return &broker.Error{Op: opConnect, Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("topic %q does not exist: create it, or enable auto.create.topics.enable on the brokers: %w", topic, err)}
	}
	return wrap(opConnect, err, "topic %q", topic)
}
