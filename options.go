package domainevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/outbox"
)

// Option configures [Open], [OpenSubscriber] and [OpenRelay]. Each
// option's doc names its default.
type Option interface {
	PublisherOption
	SubscriberOption
	RelayOption
}

// PublisherOption configures [Open]; giving one to [OpenSubscriber] does
// not compile.
type PublisherOption interface {
	applyPublisher(*publisherConfig) error
}

// SubscriberOption configures [OpenSubscriber]; giving one to [Open] does
// not compile.
type SubscriberOption interface {
	applySubscriber(*subscriberConfig) error
}

// RelayOption configures [OpenRelay].
type RelayOption interface {
	applyRelay(*relayConfig) error
}

// AdapterOption configures the adapter of both [Open] and [OpenRelay].
type AdapterOption interface {
	PublisherOption
	RelayOption
}

type common struct {
	logger   *slog.Logger
	observer broker.Observer
	wait     bool
}

type publisherConfig struct {
	common
	rabbit         []rabbitmq.PublisherOption
	kafka          []kafka.PublisherOption
	retry          []retry.Option
	asyncWorkers   int
	asyncQueue     int
	async          bool
	replayInterval time.Duration
	spoolDir       string
	noop           broker.Broker
	middleware     []func(broker.Broker) broker.Broker
	hook           func(context.Context, *broker.Message)
}

type subscriberConfig struct {
	common
	rabbit     []rabbitmq.SubscriberOption
	kafka      []kafka.SubscriberOption
	inbox      *inboxConfig
	middleware []func(broker.Handler) broker.Handler
}

type inboxConfig struct {
	store    *outbox.Store
	consumer string
	opts     []outbox.InboxOption
}

type relayConfig struct {
	common
	rabbit     []rabbitmq.PublisherOption
	kafka      []kafka.PublisherOption
	outbox     []outbox.RelayOption
	noop       broker.Broker
	middleware []func(broker.Broker) broker.Broker
}

// adapterConfig is what Open and OpenRelay share: the adapter's options.
type adapterConfig struct {
	rabbit     *[]rabbitmq.PublisherOption
	kafka      *[]kafka.PublisherOption
	noop       *broker.Broker
	middleware *[]func(broker.Broker) broker.Broker
}

func (c *publisherConfig) adapter() adapterConfig {
	return adapterConfig{&c.rabbit, &c.kafka, &c.noop, &c.middleware}
}

func (c *relayConfig) adapter() adapterConfig {
	return adapterConfig{&c.rabbit, &c.kafka, &c.noop, &c.middleware}
}

type commonOption func(*common) error

func (f commonOption) applyPublisher(c *publisherConfig) error   { return f(&c.common) }
func (f commonOption) applySubscriber(c *subscriberConfig) error { return f(&c.common) }
func (f commonOption) applyRelay(c *relayConfig) error           { return f(&c.common) }

type adapterOption func(adapterConfig) error

func (f adapterOption) applyPublisher(c *publisherConfig) error { return f(c.adapter()) }
func (f adapterOption) applyRelay(c *relayConfig) error         { return f(c.adapter()) }

type relayOption func(*relayConfig) error

func (f relayOption) applyRelay(c *relayConfig) error { return f(c) }

type publisherOption func(*publisherConfig) error

func (f publisherOption) applyPublisher(c *publisherConfig) error { return f(c) }

type subscriberOption func(*subscriberConfig) error

func (f subscriberOption) applySubscriber(c *subscriberConfig) error { return f(c) }

// WithLogger sets where every part logs (each line names its component:
// rabbitmq publisher, kafka subscriber, retry, spool replay, outbox
// relay...). Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return commonOption(func(c *common) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		c.logger = l
		return nil
	})
}

// WithObserver gives every part the one instrumentation hook: retries,
// dead letters, connections, spool depth, outbox backlog (every 10 s).
// Default: none.
func WithObserver(o broker.Observer) Option {
	return commonOption(func(c *common) error {
		if o == nil {
			return errors.New("WithObserver: observer is nil")
		}
		c.observer = o
		return nil
	})
}

// WithWaitForConnection makes Open, OpenSubscriber and OpenRelay wait for
// the first connection (bounded by their ctx) and fail if the broker
// cannot be reached. Default: they return at once and connect in the
// background, so that a service starts while the broker is down; its
// events wait, retry, and are spooled (Open) or stay in the outbox
// (OpenRelay) meanwhile.
func WithWaitForConnection() Option {
	return commonOption(func(c *common) error {
		c.wait = true
		return nil
	})
}

// WithRabbitMQ passes options to rabbitmq.New (and Open's dead-letter
// sink), after Open's or OpenRelay's own. Default: none.
func WithRabbitMQ(opts ...rabbitmq.PublisherOption) AdapterOption {
	return adapterOption(func(c adapterConfig) error {
		*c.rabbit = append(*c.rabbit, opts...)
		return nil
	})
}

// WithKafka passes options to kafka.New (and Open's dead-letter sink),
// after Open's or OpenRelay's own. Default: none.
func WithKafka(opts ...kafka.PublisherOption) AdapterOption {
	return adapterOption(func(c adapterConfig) error {
		*c.kafka = append(*c.kafka, opts...)
		return nil
	})
}

// WithOutboxRelay passes options to outbox.NewRelay, after OpenRelay's own
// (outbox.WithLogger, and outbox.WithObserver when [WithObserver] is
// given). Default: none.
func WithOutboxRelay(opts ...outbox.RelayOption) RelayOption {
	return relayOption(func(c *relayConfig) error {
		c.outbox = append(c.outbox, opts...)
		return nil
	})
}

// WithRetry passes options to the retry layer, e.g. retry.ForRequests()
// for a Publish that takes at most 2s before its event is spooled.
// Default: retry's defaults (at most 30s, 5 attempts).
func WithRetry(opts ...retry.Option) PublisherOption {
	return publisherOption(func(c *publisherConfig) error {
		c.retry = append(c.retry, opts...)
		return nil
	})
}

// WithAsync makes Forward and the bus return once the event is queued (see
// bridge.WithAsync: per-key lanes keep one aggregate's order; failures are
// spooled). Default: synchronous, the broker's answer is the caller's.
func WithAsync(workers, queue int) PublisherOption {
	return publisherOption(func(c *publisherConfig) error {
		if workers < 0 || queue < 0 {
			return fmt.Errorf("WithAsync(%d, %d): must not be negative", workers, queue)
		}
		c.async, c.asyncWorkers, c.asyncQueue = true, workers, queue
		return nil
	})
}

// WithReplayInterval sets how often the spool is checked for events to
// replay once the broker is reachable; 0 turns automatic replay off (call
// [Publisher.Replay] yourself). Default 5s.
func WithReplayInterval(d time.Duration) PublisherOption {
	return publisherOption(func(c *publisherConfig) error {
		if d < 0 {
			return fmt.Errorf("WithReplayInterval(%v): must not be negative", d)
		}
		c.replayInterval = d
		return nil
	})
}

// WithSpoolDir sets the dead-letter spool's directory, over
// MESSAGE_BROKER_SPOOL_DIR. Default: Config.SpoolDir, or a directory named
// after Config.ClientID in the system's temporary directory.
func WithSpoolDir(dir string) PublisherOption {
	return publisherOption(func(c *publisherConfig) error {
		if dir == "" {
			return errors.New("WithSpoolDir: directory is empty")
		}
		c.spoolDir = dir
		return nil
	})
}

// WithDisabledBroker sets the broker used when the configuration disables
// the real one (MESSAGE_BROKER_ENABLED=false), e.g. one that prints or
// records what it gets. Default: broker/noop.
func WithDisabledBroker(b broker.Broker) AdapterOption {
	return adapterOption(func(c adapterConfig) error {
		if b == nil {
			return errors.New("WithDisabledBroker: broker is nil")
		}
		*c.noop = b
		return nil
	})
}

// WithPublishMiddleware wraps the adapter with mw: every attempt of every
// publish (and every replay of the spool) goes through it, inside Open's
// retry layer; with OpenRelay, every publish of the relay. Instrumentation
// uses it (the OpenTelemetry module's WrapBroker makes a send span per
// attempt and carries the trace context in the message headers). Given
// several times, the first wraps innermost. Default: none.
func WithPublishMiddleware(mw func(next broker.Broker) broker.Broker) AdapterOption {
	return adapterOption(func(c adapterConfig) error {
		if mw == nil {
			return errors.New("WithPublishMiddleware: middleware is nil")
		}
		*c.middleware = append(*c.middleware, mw)
		return nil
	})
}

// WithMessageHook calls fn with each message [Publisher.Forward],
// [Publisher.Publish] and the attached bus publish, in the caller's
// goroutine and with its ctx, before the asynchronous queue, the retry
// layer and the spool: what fn writes into m.Headers stays with the event
// through all of them, and is replayed with it from the spool.
// Instrumentation uses it (the OpenTelemetry module's MessageHook writes
// the caller's trace context there, so that an event published
// asynchronously or replayed later stays in the request's trace). fn gets
// a message of its own (m.Headers may be nil; set a new map then).
// Default: none.
func WithMessageHook(fn func(ctx context.Context, m *broker.Message)) PublisherOption {
	return publisherOption(func(c *publisherConfig) error {
		if fn == nil {
			return errors.New("WithMessageHook: fn is nil")
		}
		c.hook = fn
		return nil
	})
}

// WithRabbitMQSubscriber passes options to rabbitmq.NewSubscriber, after
// OpenSubscriber's own. Default: none.
func WithRabbitMQSubscriber(opts ...rabbitmq.SubscriberOption) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) error {
		c.rabbit = append(c.rabbit, opts...)
		return nil
	})
}

// WithKafkaSubscriber passes options to kafka.NewSubscriber, after
// OpenSubscriber's own. Default: none.
func WithKafkaSubscriber(opts ...kafka.SubscriberOption) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) error {
		c.kafka = append(c.kafka, opts...)
		return nil
	})
}

// WithInbox puts an outbox.Inbox of consumer, in store's inbox table,
// between the subscriber and the handler given to [OpenSubscriber]: each
// event id is handled once for consumer, in one database transaction with
// the handler's own writes (outbox.TxFrom(ctx) in the handler, typed
// handlers included: bridge.EnvelopeFrom and outbox.TxFrom both work in
// an eventbus handler behind bridge.NewHandler), acknowledged only after
// it commits, and each key's events applied in the producer's commit
// order (see outbox.Inbox.Handler). Duplicates it skips are logged at
// Debug and reported to [WithObserver]'s observer. The inbox gets
// [WithLogger] and [WithObserver], then opts. The subscriber's Close
// closes the inbox after the subscriber; [InboxOf] returns it (to list
// keys blocked by a gap, or skip one). A nil store or an empty consumer is
// an error matching broker.ErrInvalid. Default: no inbox (use bridge.Dedup
// to deduplicate within one process).
func WithInbox(store *outbox.Store, consumer string, opts ...outbox.InboxOption) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) error {
		switch {
		case store == nil:
			return errors.New("WithInbox: store is nil")
		case consumer == "":
			return errors.New("WithInbox: consumer is empty")
		}
		c.inbox = &inboxConfig{store: store, consumer: consumer, opts: opts}
		return nil
	})
}

// WithHandlerMiddleware wraps the handler the subscriber calls, outside
// [WithInbox]'s inbox: mw sees every delivery, duplicates included, and
// its time includes the inbox's transaction. Instrumentation uses it (the
// OpenTelemetry module's WrapHandler makes the process span, with the
// inbox's work and the handlers inside it). Given several times, the first
// wraps innermost. Default: none.
func WithHandlerMiddleware(mw func(next broker.Handler) broker.Handler) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) error {
		if mw == nil {
			return errors.New("WithHandlerMiddleware: middleware is nil")
		}
		c.middleware = append(c.middleware, mw)
		return nil
	})
}

func invalid(err error) error {
	return &broker.Error{Op: "domainevents: options", Kind: broker.ErrInvalid, Err: err}
}
