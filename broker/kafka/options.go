package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
)

// Option configures the connection: [New], [NewSubscriber] and
// [NewDeadLetterSink] all take it. Each option's doc names its default.
type Option interface {
	PublisherOption
	SubscriberOption
}

// PublisherOption configures [New]: every [Option], plus the publisher's
// own ([WithFNVPartitioner], [WithTopicPerEvent], [WithCloudEvents]).
// Passing one of those to [NewSubscriber] does not compile.
type PublisherOption interface {
	applyPublisher(*publisherOptions) error
}

// SubscriberOption configures [NewSubscriber]: every [Option], plus the
// subscriber's own ([WithConcurrency], [WithMaxAttempts],
// [WithRetryBackoff], [WithStartAtNewest]). Passing one of those to [New] does not compile.
type SubscriberOption interface {
	applySubscriber(*subscriberOptions) error
}

// connOptions configure reaching the cluster, for both roles.
type connOptions struct {
	logger                 *slog.Logger
	observer               broker.Observer
	sarama                 *sarama.Config
	tls                    *tls.Config
	sasl                   string
	connectMin, connectMax time.Duration
	lazy                   bool
}

type publisherOptions struct {
	connOptions
	partitioner   sarama.PartitionerConstructor
	topicPerEvent bool
	// ceSource is the CloudEvents source; "" writes no CloudEvents headers.
	ceSource string
}

type subscriberOptions struct {
	connOptions
	concurrency        int
	maxAttempts        int
	retryMin, retryMax time.Duration
	startNewest        bool
}

// The defaults of every option, in one place.
func defaultConn() connOptions {
	return connOptions{
		logger:     slog.Default(),
		connectMin: 100 * time.Millisecond,
		connectMax: 5 * time.Second,
	}
}

func defaultPublisher() publisherOptions {
	return publisherOptions{connOptions: defaultConn(), partitioner: sarama.NewMurmur2Partitioner}
}

func defaultSubscriber() subscriberOptions {
	return subscriberOptions{
		connOptions: defaultConn(),
		concurrency: 1,
		maxAttempts: 5,
		retryMin:    100 * time.Millisecond,
		retryMax:    5 * time.Second,
	}
}

// connOption applies to the connOptions embedded in either role's options.
type connOption func(*connOptions) error

func (f connOption) applyPublisher(o *publisherOptions) error   { return f(&o.connOptions) }
func (f connOption) applySubscriber(o *subscriberOptions) error { return f(&o.connOptions) }

type publisherOption func(*publisherOptions) error

func (f publisherOption) applyPublisher(o *publisherOptions) error { return f(o) }

type subscriberOption func(*subscriberOptions) error

func (f subscriberOption) applySubscriber(o *subscriberOptions) error { return f(o) }

// DefaultMaxRecordSize is the largest record the publisher produces
// unless a [WithSaramaConfig] says otherwise: sarama's default
// Producer.MaxMessageBytes (1 MiB), counted over the record's value, key,
// headers and framing. A larger one fails with broker.ErrTooLarge.
const DefaultMaxRecordSize = 1 << 20

// SASL mechanisms for [WithSASL].
const (
	SASLPlain       = sarama.SASLTypePlaintext   // "PLAIN"
	SASLSCRAMSHA256 = sarama.SASLTypeSCRAMSHA256 // "SCRAM-SHA-256"
	SASLSCRAMSHA512 = sarama.SASLTypeSCRAMSHA512 // "SCRAM-SHA-512"
)

// WithLogger sets where connection problems, retries and dead letters are
// logged; every line carries a "component" attribute ("kafka publisher",
// "kafka subscriber", "kafka dead-letter sink"). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return connOption(func(o *connOptions) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		o.logger = l
		return nil
	})
}

// WithObserver reports connections made and lost (broker.ObservedConnected,
// broker.ObservedDisconnected), and on the subscriber retries and dead
// letters (broker.ObservedRetry, broker.ObservedDeadLetter), to o. Default:
// none.
func WithObserver(o broker.Observer) Option {
	return connOption(func(c *connOptions) error {
		if o == nil {
			return errors.New("WithObserver: observer is nil")
		}
		c.observer = o
		return nil
	})
}

// WithSaramaConfig starts from the caller's sarama configuration instead of
// ours (compression, versions, timeouts, metadata...). It must keep
// durability: Producer.RequiredAcks = sarama.WaitForAll, and with
// Producer.Idempotent (recommended) Net.MaxOpenRequests = 1 and
// Producer.Retry.Max >= 1; New says what to change otherwise.
// Producer.Return.Successes and Errors are always switched on (the adapter
// consumes them). The Config's client id, addresses, TLS and SASL options
// still apply; c itself is not modified. Default: acks=all, idempotent,
// 10 retries inside sarama, protocol sarama.DefaultVersion (see the package
// doc).
func WithSaramaConfig(c *sarama.Config) Option {
	return connOption(func(o *connOptions) error {
		if c == nil {
			return errors.New("WithSaramaConfig: config is nil")
		}
		o.sarama = c
		return nil
	})
}

// WithTLS connects with TLS using c (nil: the system roots, TLS 1.2 or
// later). MESSAGE_BROKER_TLS=true does the same with a nil config.
// Default: no TLS.
func WithTLS(c *tls.Config) Option {
	return connOption(func(o *connOptions) error {
		if c == nil {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = c
		return nil
	})
}

// WithSASL authenticates with Config.Username and Config.Password using
// mechanism: [SASLPlain], [SASLSCRAMSHA256] or [SASLSCRAMSHA512]. PLAIN
// sends the password as it is, readable by anyone on the path: use it with
// [WithTLS] (or MESSAGE_BROKER_TLS=true); it is not refused without, for
// networks encrypted by other means. Default: no SASL.
func WithSASL(mechanism string) Option {
	return connOption(func(o *connOptions) error {
		switch mechanism {
		case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
			o.sasl = mechanism
			return nil
		}
		return fmt.Errorf("WithSASL(%q): want %s, %s or %s", mechanism, SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512)
	})
}

// WithConnectBackoff sets the waits between attempts to reach the cluster
// (New and NewSubscriber, the background loop of [WithLazyConnect], and the
// subscriber's rejoin after a failed consumer-group session): exponential
// with full jitter, each wait a random draw up to min(max, first·2^n),
// n counting consecutive failures from 0. Default: first 100ms, max 5s.
func WithConnectBackoff(first, max time.Duration) Option {
	return connOption(func(o *connOptions) error {
		if first <= 0 || max < first {
			return fmt.Errorf("WithConnectBackoff(%v, %v): want 0 < first <= max", first, max)
		}
		o.connectMin, o.connectMax = first, max
		return nil
	})
}

// WithLazyConnect makes New, NewSubscriber and NewDeadLetterSink return at
// once after checking their configuration, and reach the cluster in the
// background (with [WithConnectBackoff], logging the first failure at Warn
// and then at most every 30s, reporting to [WithObserver]). Until then
// Publish waits for the connection, up to its ctx (an error matching
// broker.ErrUnavailable and the ctx error, not broker.ErrOutcomeUnknown: the
// record was not sent), Health reports broker.ErrUnavailable with the last
// error, and errors that cannot heal by retrying (authentication, a missing
// topic) are retried too, with waits growing up to 15s, logged at Error
// at most every 30s: someone may fix them. A refused login (a wrong SASL
// password or mechanism, no permission on the topic) makes Health return
// an error matching broker.ErrUnauthorized that says so (never the
// password), so that a readiness probe shows it. Default: off, New waits
// until connected or its ctx ends, and fails at once on those errors.
func WithLazyConnect() Option {
	return connOption(func(o *connOptions) error {
		o.lazy = true
		return nil
	})
}

// WithFNVPartitioner uses sarama's FNV-1a hash partitioner instead of
// murmur2. Only for compatibility with topics written by older sarama
// producers: Java, kafkajs and librdkafka's "murmur2_random" producers put
// the same key elsewhere. Default: murmur2, as Kafka's Java client.
func WithFNVPartitioner() PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		o.partitioner = sarama.NewHashPartitioner
		return nil
	})
}

// WithTopicPerEvent publishes each event to a topic named after it
// ("order.created", ...) instead of Config.Topic. Events of one order then
// live in several topics and lose their relative order. Default: one topic.
func WithTopicPerEvent() PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		o.topicPerEvent = true
		return nil
	})
}

// WithCloudEvents publishes in CloudEvents binary content mode as
// cloudevents/sdk-go's Kafka (sarama) binding does, with source as the
// source attribute (a URI-reference, e.g. "/orders-service"): beside the
// usual headers each record carries ce_id (Message.ID), ce_source,
// ce_specversion ("1.0"), ce_type (Message.Name), ce_time (Message.Time,
// RFC 3339 UTC) and, when the message has a key, ce_partitionkey
// (Message.Key, also the record key); the content-type header, already
// written, is the data's media type and the value, unchanged, the data.
// Consumers that know only this library's headers see no difference.
// Default: Config.CloudEventsSource (MESSAGE_BROKER_CLOUDEVENTS_SOURCE),
// empty meaning off. The subscriber reads ce_ headers whatever this says.
func WithCloudEvents(source string) PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		if err := broker.CheckCloudEventsSource(source); err != nil {
			return fmt.Errorf("WithCloudEvents: %w", err)
		}
		o.ceSource = source
		return nil
	})
}

// maxConcurrency bounds WithConcurrency: a handler goroutine per key far
// beyond what a partition's records in flight can use is a mistake.
const maxConcurrency = 4096

// WithConcurrency runs up to n handler calls at once per partition
// claimed, never two of one record key at once, each key's records in
// partition order (records without a key share one lane: one at a time,
// in order). A failing record holds its key only: the partition's other
// keys go on meanwhile, and its offset is committed only once every record
// before it is finished. n = 1 handles a partition's records one at a
// time. Default 1; at most 4096.
func WithConcurrency(n int) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if n < 1 || n > maxConcurrency {
			return fmt.Errorf("WithConcurrency(%d): want 1 to %d handlers per partition", n, maxConcurrency)
		}
		o.concurrency = n
		return nil
	})
}

// WithMaxAttempts bounds how often a record is handled before it is
// dead-lettered to "<topic>.dlq". Default 5.
func WithMaxAttempts(n int) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		o.maxAttempts = n
		return nil
	})
}

// WithRetryBackoff sets the waits between a handler's attempts on one
// record: exponential with full jitter, each wait a random draw up to
// min(max, first·2^n), n counting the record's failures from 0. The
// record's key waits meanwhile, keeping its order; the partition's other
// keys go on. Default: first 100ms, max 5s.
func WithRetryBackoff(first, max time.Duration) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if first <= 0 || max < first {
			return fmt.Errorf("WithRetryBackoff(%v, %v): want 0 < first <= max", first, max)
		}
		o.retryMin, o.retryMax = first, max
		return nil
	})
}

// WithStartAtNewest makes a new consumer group start at the end of the
// topic instead of its beginning. Default: the oldest retained record, so a
// new service sees the history it can.
func WithStartAtNewest() SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		o.startNewest = true
		return nil
	})
}
