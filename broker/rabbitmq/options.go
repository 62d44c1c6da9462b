package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Option configures [New] and [NewSubscriber]. Each option's doc names its
// default.
type Option func(*options) error

type options struct {
	logger         *slog.Logger
	tls            *tls.Config
	heartbeat      time.Duration
	connName       string
	urls           []string
	passive        bool
	queues         []Queue
	alternate      string
	window         int
	backoffMin     time.Duration
	backoffMax     time.Duration
	maxMessageSize int
	amqpConfig     *amqp.Config
	dialTimeout    time.Duration

	prefetch    int
	concurrency int
	maxAttempts int
	retryDelay  time.Duration
}

func defaultOptions() options {
	return options{
		logger:         slog.Default(),
		heartbeat:      10 * time.Second,
		window:         1024,
		backoffMin:     100 * time.Millisecond,
		backoffMax:     10 * time.Second,
		maxMessageSize: 16 << 20,
		dialTimeout:    10 * time.Second,
		concurrency:    1,
		maxAttempts:    5,
		retryDelay:     time.Second,
	}
}

// Queue is a durable queue the adapter declares and binds to its exchange
// on every (re)connect, so that published events have somewhere to go.
type Queue struct {
	// Name of the queue. Required.
	Name string
	// Keys are the routing-key patterns to bind, e.g. "order.#" or
	// "order.cancelled". Default: "#" (everything).
	Keys []string
	// Args are the queue's x-arguments (x-max-length, x-queue-type, ...).
	// They must match those of an existing queue of the same name.
	Args amqp.Table
}

// WithLogger sets where connection state changes and reconnects are logged
// (Info/Warn; never a password). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		o.logger = l
		return nil
	}
}

// WithTLS connects with amqps using c (nil: the system roots). Setting
// MESSAGE_BROKER_TLS=true does the same with a nil config. Default: plain
// amqp.
func WithTLS(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = c
		return nil
	}
}

// WithHeartbeat sets the AMQP heartbeat interval: a silent (black-holed)
// connection is detected after three missed intervals. Default 10s.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithHeartbeat(%v): must be positive", d)
		}
		o.heartbeat = d
		return nil
	}
}

// WithConnectionName sets the name shown in the RabbitMQ management UI.
// Default: Config.ClientID.
func WithConnectionName(name string) Option {
	return func(o *options) error {
		o.connName = name
		return nil
	}
}

// WithURLs connects to these AMQP URLs (amqp:// or amqps://, user and
// password included), tried in turn, instead of the addresses and
// credentials in the Config. Default: built from the Config.
func WithURLs(urls ...string) Option {
	return func(o *options) error {
		if len(urls) == 0 {
			return errors.New("WithURLs: no URL given")
		}
		for i, u := range urls {
			if _, err := amqp.ParseURI(u); err != nil {
				// The URL may hold a password: name it by position only.
				return fmt.Errorf("WithURLs: URL #%d is not an AMQP URL: %v", i+1, redactURLError(err))
			}
		}
		o.urls = append([]string(nil), urls...)
		return nil
	}
}

func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "malformed"
}

// WithPassive checks that the exchange exists instead of declaring it, for
// brokers where the application may not declare topology. Queues from
// WithQueue are still declared. Default: declare a durable topic exchange.
func WithPassive() Option {
	return func(o *options) error {
		o.passive = true
		return nil
	}
}

// WithQueue declares a durable queue bound to the exchange with the given
// routing-key patterns (default "#"). Without a bound queue (or an alternate
// exchange) RabbitMQ has nowhere to put an event and Publish returns
// broker.ErrUnroutable. May be given several times. Default: none.
func WithQueue(q Queue) Option {
	return func(o *options) error {
		if q.Name == "" {
			return errors.New("WithQueue: Name is empty")
		}
		if len(q.Keys) == 0 {
			q.Keys = []string{"#"}
		}
		o.queues = append(o.queues, q)
		return nil
	}
}

// WithAlternateExchange sets the exchange's alternate-exchange argument to
// name and declares name as a durable fanout exchange with a durable queue
// of the same name bound to it: events no queue is bound for land there
// instead of failing with broker.ErrUnroutable. The main exchange's
// arguments must match if it already exists. Default: none.
func WithAlternateExchange(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("WithAlternateExchange: name is empty")
		}
		o.alternate = name
		return nil
	}
}

// WithWindow bounds how many messages may await a confirm at once; further
// publishes wait (up to their ctx) for a free slot. Default 1024.
func WithWindow(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithWindow(%d): must be at least 1", n)
		}
		o.window = n
		return nil
	}
}

// WithReconnectBackoff sets the first and the largest delay between
// reconnect attempts (exponential with full jitter). Default 100ms and 10s.
func WithReconnectBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		if min <= 0 || max < min {
			return fmt.Errorf("WithReconnectBackoff(%v, %v): want 0 < min <= max", min, max)
		}
		o.backoffMin, o.backoffMax = min, max
		return nil
	}
}

// WithMaxMessageSize refuses bodies larger than n bytes with
// broker.ErrTooLarge before sending them (a too-large message would make
// RabbitMQ close the channel). Default 16 MiB, RabbitMQ 4's max_message_size.
func WithMaxMessageSize(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithMaxMessageSize(%d): must be positive", n)
		}
		o.maxMessageSize = n
		return nil
	}
}

// WithAMQPConfig starts from a native amqp091 Config (properties, locale,
// channel max, a custom Dial...). Heartbeat, TLS and connection name options
// still apply on top. Default: amqp091's defaults.
func WithAMQPConfig(c amqp.Config) Option {
	return func(o *options) error {
		o.amqpConfig = &c
		return nil
	}
}

// WithDialTimeout bounds each TCP connect and AMQP handshake. Default 10s.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithDialTimeout(%v): must be positive", d)
		}
		o.dialTimeout = d
		return nil
	}
}

// Subscriber options (ignored by the publisher).

// WithPrefetch sets how many unacknowledged deliveries the broker may push
// to the subscriber at once (basic.qos). Default 4 × concurrency.
func WithPrefetch(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithPrefetch(%d): must be at least 1", n)
		}
		o.prefetch = n
		return nil
	}
}

// WithConcurrency sets how many handlers run at once. Messages of one
// routing key may then be handled out of order. Default 1.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithConcurrency(%d): must be at least 1", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithMaxAttempts bounds how often a delivery is handled before it is
// dead-lettered. Default 5.
func WithMaxAttempts(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithRetryDelay sets how long a failed delivery waits in the retry queue
// before it is handled again. Default 1s.
func WithRetryDelay(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Millisecond {
			return fmt.Errorf("WithRetryDelay(%v): must be at least 1ms", d)
		}
		o.retryDelay = d
		return nil
	}
}
