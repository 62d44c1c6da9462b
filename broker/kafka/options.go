package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"
)

// Option configures [New]. Each option's doc names its default.
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
}

func defaultOptions() options {
	return options{
		logger:      slog.Default(),
		partitioner: sarama.NewMurmur2Partitioner,
		connectMin:  100 * time.Millisecond,
		connectMax:  5 * time.Second,
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
