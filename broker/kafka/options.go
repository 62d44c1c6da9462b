package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"
)

// Option configures [New] and [NewSubscriber]. Each option's doc names its
// default.
type Option func(*options) error

type options struct {
	logger        *slog.Logger
	sarama        *sarama.Config
	tls           *tls.Config
	sasl          string
	partitioner   sarama.PartitionerConstructor
	topicPerEvent bool
	connectMin    time.Duration
	connectMax    time.Duration

	maxAttempts        int
	retryMin, retryMax time.Duration
	startNewest        bool
}

func defaultOptions() options {
	return options{
		logger:      slog.Default(),
		partitioner: sarama.NewMurmur2Partitioner,
		connectMin:  100 * time.Millisecond,
		connectMax:  5 * time.Second,
		maxAttempts: 5,
		retryMin:    100 * time.Millisecond,
		retryMax:    5 * time.Second,
	}
}

// SASL mechanisms for [WithSASL].
const (
	SASLPlain       = sarama.SASLTypePlaintext   // "PLAIN"
	SASLSCRAMSHA256 = sarama.SASLTypeSCRAMSHA256 // "SCRAM-SHA-256"
	SASLSCRAMSHA512 = sarama.SASLTypeSCRAMSHA512 // "SCRAM-SHA-512"
)

// WithLogger sets where connection problems are logged. Default:
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		o.logger = l
		return nil
	}
}

// WithSaramaConfig starts from the caller's sarama configuration instead of
// ours (compression, versions, timeouts, metadata...). It must keep
// durability: Producer.RequiredAcks = sarama.WaitForAll, and with
// Producer.Idempotent (recommended) Net.MaxOpenRequests = 1 and
// Producer.Retry.Max >= 1; New says what to change otherwise.
// Producer.Return.Successes and Errors are always switched on (the adapter
// consumes them). The Config's client id, addresses, TLS and SASL options
// still apply. Default: see the package doc.
func WithSaramaConfig(c *sarama.Config) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("WithSaramaConfig: config is nil")
		}
		o.sarama = c
		return nil
	}
}

// WithTLS connects with TLS using c (nil: the system roots).
// MESSAGE_BROKER_TLS=true does the same with a nil config. Default: no TLS.
func WithTLS(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = c
		return nil
	}
}

// WithSASL authenticates with Config.Username and Config.Password using
// mechanism: [SASLPlain], [SASLSCRAMSHA256] or [SASLSCRAMSHA512]. Default:
// no SASL.
func WithSASL(mechanism string) Option {
	return func(o *options) error {
		switch mechanism {
		case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
			o.sasl = mechanism
			return nil
		}
		return fmt.Errorf("WithSASL(%q): want %s, %s or %s", mechanism, SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512)
	}
}

// WithFNVPartitioner uses sarama's FNV-1a hash partitioner instead of
// murmur2. Only for compatibility with topics written by older sarama
// producers: Java, kafkajs and librdkafka's "murmur2_random" producers put
// the same key elsewhere. Default: murmur2, as Kafka's Java client.
func WithFNVPartitioner() Option {
	return func(o *options) error {
		o.partitioner = sarama.NewHashPartitioner
		return nil
	}
}

// WithTopicPerEvent publishes each event to a topic named after it
// ("order.created", ...) instead of Config.Topic. Events of one order then
// live in several topics and lose their relative order. Default: one topic.
func WithTopicPerEvent() Option {
	return func(o *options) error {
		o.topicPerEvent = true
		return nil
	}
}

// WithConnectBackoff sets the first and largest delay between New's
// attempts to reach the cluster (exponential, full jitter). Default 100ms
// and 5s.
func WithConnectBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		if min <= 0 || max < min {
			return fmt.Errorf("WithConnectBackoff(%v, %v): want 0 < min <= max", min, max)
		}
		o.connectMin, o.connectMax = min, max
		return nil
	}
}

// Subscriber options (ignored by the publisher).

// WithMaxAttempts bounds how often a record is handled before it is
// dead-lettered to "<topic>.dlq". Default 5.
func WithMaxAttempts(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithRetryBackoff sets the first and largest wait between a handler's
// attempts on one record (exponential, full jitter); the partition waits
// meanwhile, keeping its order. Default 100ms and 5s.
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		if min <= 0 || max < min {
			return fmt.Errorf("WithRetryBackoff(%v, %v): want 0 < min <= max", min, max)
		}
		o.retryMin, o.retryMax = min, max
		return nil
	}
}

// WithStartAtNewest makes a new consumer group start at the end of the
// topic instead of its beginning. Default: the oldest retained record, so a
// new service sees the history it can.
func WithStartAtNewest() Option {
	return func(o *options) error {
		o.startNewest = true
		return nil
	}
}
