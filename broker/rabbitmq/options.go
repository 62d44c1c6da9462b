package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
)

// Option configures the connection. It is both a [PublisherOption] and a
// [SubscriberOption]: [New], [NewSubscriber] and [NewDeadLetterSink] all
// take it. Each option's doc names its default.
type Option interface {
	PublisherOption
	SubscriberOption
}

// PublisherOption configures [New] (and [NewDeadLetterSink]). Options that
// only make sense when publishing are of this type, so that giving one to
// [NewSubscriber] does not compile.
type PublisherOption interface {
	applyPublisher(*publisherOptions) error
}

// SubscriberOption configures [NewSubscriber]. Options that only make sense
// when consuming are of this type, so that giving one to [New] does not
// compile.
type SubscriberOption interface {
	applySubscriber(*subscriberOptions) error
}

// connOptions is what publisher and subscriber share: how to connect.
type connOptions struct {
	logger         *slog.Logger
	observer       broker.Observer
	tls            *tls.Config
	heartbeat      time.Duration
	connName       string
	urls           []string
	passive        bool
	alternate      string // the exchange's alternate exchange, "" for none
	amqpConfig     *amqp.Config
	dialTimeout    time.Duration
	backoffInitial time.Duration
	backoffMax     time.Duration
	lazy           bool

	dial dialFunc // a test seam: nil dials amqp091
}

type publisherOptions struct {
	conn           connOptions
	queues         []Queue
	window         int
	maxMessageSize int
	nackReplace    time.Duration // how long a channel may nack everything before it is replaced (a test seam)
	ceSource       string        // the CloudEvents source; "" writes no CloudEvents headers
}

type subscriberOptions struct {
	conn               connOptions
	prefetch           int // 0: max(defaultPrefetch, 4 × concurrency)
	concurrency        int
	unordered          bool
	maxAttempts        int
	retryMin, retryMax time.Duration
}

// The defaults, in one place.
func defaultConnOptions() connOptions {
	return connOptions{
		logger:         slog.Default(),
		heartbeat:      10 * time.Second,
		dialTimeout:    10 * time.Second,
		backoffInitial: 50 * time.Millisecond,
		backoffMax:     time.Second,
	}
}

func defaultPublisherOptions() publisherOptions {
	return publisherOptions{conn: defaultConnOptions(), window: 1024, maxMessageSize: DefaultMaxMessageSize, nackReplace: time.Second}
}

func defaultSubscriberOptions() subscriberOptions {
	return subscriberOptions{conn: defaultConnOptions(), concurrency: 1, maxAttempts: 5,
		retryMin: 100 * time.Millisecond, retryMax: 5 * time.Second}
}

// maxRetryBudget bounds the longest a failed delivery may be held for its
// retries, (WithMaxAttempts - 1) × WithRetryBackoff's max: it stays
// unacknowledged meanwhile, and RabbitMQ closes the channel of a delivery
// unacknowledged for consumer_timeout (30 min by default).
const maxRetryBudget = 20 * time.Minute

// validate checks what options can only check together.
func (o subscriberOptions) validate() error {
	if o.maxAttempts > 1 && o.retryMax > maxRetryBudget/time.Duration(o.maxAttempts-1) {
		return fmt.Errorf("WithMaxAttempts(%d) and WithRetryBackoff max %v: a failed delivery could be held for its retries "+
			"longer than %v (it stays unacknowledged while it waits, and RabbitMQ's consumer_timeout closes the channel after 30 min)",
			o.maxAttempts, o.retryMax, maxRetryBudget)
	}
	return nil
}

type connOption func(*connOptions) error

func (f connOption) applyPublisher(o *publisherOptions) error   { return f(&o.conn) }
func (f connOption) applySubscriber(o *subscriberOptions) error { return f(&o.conn) }

type publisherOption func(*publisherOptions) error

func (f publisherOption) applyPublisher(o *publisherOptions) error { return f(o) }

type subscriberOption func(*subscriberOptions) error

func (f subscriberOption) applySubscriber(o *subscriberOptions) error { return f(o) }

// Connection options.

// WithLogger sets where connection state changes, reconnects and failures
// are logged (never a password). Every line carries "component" (rabbitmq
// publisher, rabbitmq subscriber, rabbitmq dead-letter sink) so that two
// connections of one process can be told apart. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return connOption(func(o *connOptions) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		o.logger = l
		return nil
	})
}

// WithObserver reports connections made and lost (and, for subscribers,
// retries and dead letters) to obs. Default: none.
func WithObserver(obs broker.Observer) Option {
	return connOption(func(o *connOptions) error {
		if obs == nil {
			return errors.New("WithObserver: observer is nil")
		}
		o.observer = obs
		return nil
	})
}

// WithTLS connects with amqps using c (nil: the system roots).
// MESSAGE_BROKER_TLS=true does the same with a nil config. Default: plain
// amqp.
func WithTLS(c *tls.Config) Option {
	return connOption(func(o *connOptions) error {
		if c == nil {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = c
		return nil
	})
}

// WithHeartbeat sets the AMQP heartbeat interval: a silent (black-holed)
// connection is detected after three missed intervals. Default 10s.
func WithHeartbeat(d time.Duration) Option {
	return connOption(func(o *connOptions) error {
		if d <= 0 {
			return fmt.Errorf("WithHeartbeat(%v): must be positive", d)
		}
		o.heartbeat = d
		return nil
	})
}

// WithConnectionName sets the name shown in the RabbitMQ management UI.
// Default: Config.ClientID.
func WithConnectionName(name string) Option {
	return connOption(func(o *connOptions) error {
		o.connName = name
		return nil
	})
}

// WithURLs connects to these AMQP URLs (amqp:// or amqps://, user and
// password included), tried in turn, instead of the addresses and
// credentials in the Config. With [WithTLS] or MESSAGE_BROKER_TLS=true
// every URL must be amqps://. Default: built from the Config.
func WithURLs(urls ...string) Option {
	return connOption(func(o *connOptions) error {
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
	})
}

// redactURLError describes why a URL did not parse without quoting any of
// it: net/url's errors carry the offending part, which may be a password
// (an unescaped "@" in "amqp://user:p@ss@host" leaves "ss@host" to parse).
func redactURLError(err error) string {
	const escapeHint = " (a reserved character in the user name or password must be percent-encoded)"
	var escape url.EscapeError
	var host url.InvalidHostError
	var ue *url.Error
	switch {
	case errors.As(err, &escape):
		return "invalid percent-escape" + escapeHint
	case errors.As(err, &host):
		return "invalid character in host" + escapeHint
	case errors.As(err, &ue):
		return "malformed" + escapeHint
	case strings.Contains(err.Error(), "scheme"):
		return "the scheme must be amqp:// or amqps://"
	case strings.Contains(err.Error(), "whitespace"):
		return "it contains whitespace"
	}
	return "malformed query parameter"
}

// WithPassive checks that the exchange exists instead of declaring it, for
// brokers where the application may not declare topology. Queues, and the
// alternate exchange of [WithAlternateExchange] with its queue, are still
// declared. Default: declare a durable topic exchange.
func WithPassive() Option {
	return connOption(func(o *connOptions) error {
		o.passive = true
		return nil
	})
}

// WithAMQPConfig starts from a native amqp091 Config (properties, locale,
// channel max, a custom Dial...). The adapter's settings replace its
// fields: Heartbeat always (from [WithHeartbeat], default 10s), and
// TLSClientConfig and the connection name when [WithTLS] or
// [WithConnectionName] (or their Config defaults) set them. A custom Dial
// replaces the adapter's, which bounds the connect and the handshake by
// [WithDialTimeout] and aborts on Close: yours must bound itself. Its
// Recovery must be nil (the adapter reconnects by itself). Default:
// amqp091's defaults.
func WithAMQPConfig(c amqp.Config) Option {
	return connOption(func(o *connOptions) error {
		if c.Recovery != nil {
			return errors.New("WithAMQPConfig: Recovery must be nil: the adapter reconnects and re-publishes by itself")
		}
		o.amqpConfig = &c
		return nil
	})
}

// WithDialTimeout bounds each TCP connect and AMQP handshake. Default 10s.
func WithDialTimeout(d time.Duration) Option {
	return connOption(func(o *connOptions) error {
		if d <= 0 {
			return fmt.Errorf("WithDialTimeout(%v): must be positive", d)
		}
		o.dialTimeout = d
		return nil
	})
}

// WithReconnectBackoff sets the backoff between connection attempts: the
// wait before attempt n+1 is a random draw in [0, min(max,
// initial·2^(n-1))], so max is the longest wait there can be, and a broker
// that comes back is found within about max. Each attempt tries the next
// address. Default 50ms and 1s.
func WithReconnectBackoff(initial, max time.Duration) Option {
	return connOption(func(o *connOptions) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithReconnectBackoff(%v, %v): want 0 < initial <= max", initial, max)
		}
		o.backoffInitial, o.backoffMax = initial, max
		return nil
	})
}

// WithLazyConnect makes New and NewSubscriber return at once, without a
// connection: the adapter connects in the background, with the reconnect
// backoff, logging failures (the first at Warn, then at most every 30s).
// Meanwhile publishes wait (up to their ctx) and [Broker.Health] (and
// [Subscriber.Health]) reports the last error. Use it so that a service
// can start while the broker is down. A wrong password or a virtual host
// the user may not open is retried too (an operator may fix the user),
// with waits growing up to 15s, logged at Error at most every 30s, and
// Health then returns an error matching broker.ErrUnauthorized that says
// so (never the password): a readiness probe shows it. Default: New waits
// for the first connection and fails if no address answers, or at once on
// bad credentials or topology.
func WithLazyConnect() Option {
	return connOption(func(o *connOptions) error {
		o.lazy = true
		return nil
	})
}

// WithAlternateExchange sets the exchange's alternate-exchange argument to
// name and declares name as a durable fanout exchange with a durable queue
// of the same name bound to it: events no queue is bound for land there
// instead of failing with broker.ErrUnroutable.
//
// It is an argument of the exchange, not of one publisher: RabbitMQ refuses
// to declare an exchange again with other arguments (PRECONDITION_FAILED -
// inequivalent arg 'alternate-exchange'), so give it to every [New] and
// [NewSubscriber] of the exchange alike, as you give them the same
// Config.Exchange. Each declares the exchange from the same spec on every
// (re)connect. ([NewDeadLetterSink] takes it too and leaves it out: its
// exchange routes everything to its queue.) A subscriber not given it
// (another team's service) finds the exchange declared with an alternate,
// checks that it exists and binds to it as it is; a publisher must match.
// Default: none.
func WithAlternateExchange(name string) Option {
	return connOption(func(o *connOptions) error {
		if name == "" {
			return errors.New("WithAlternateExchange: name is empty")
		}
		o.alternate = name
		return nil
	})
}

// withDialer replaces amqp091's dial: the tests' fake connections.
func withDialer(d dialFunc) Option {
	return connOption(func(o *connOptions) error {
		o.dial = d
		return nil
	})
}

// Publisher options.

// Queue is a durable queue the adapter declares and binds to its exchange
// on every (re)connect, so that published events have somewhere to go.
type Queue struct {
	// Name of the queue. Required.
	Name string
	// Keys are the routing-key patterns to bind, e.g. "order.#" or
	// "order.cancelled". Default: "#" (everything).
	Keys []string
	// Type is the queue type: [Classic] (default) or [Quorum], replicated
	// across a cluster's nodes, the type RabbitMQ 4 recommends. It must
	// match the type of an existing queue of the same name.
	Type QueueType
	// Args are the queue's other x-arguments (x-max-length, ...). They must
	// match those of an existing queue of the same name.
	Args amqp.Table
}

// QueueType is a RabbitMQ queue type.
type QueueType string

// The queue types.
const (
	// Classic queues live on one node.
	Classic QueueType = "classic"
	// Quorum queues are replicated (Raft) across the cluster's nodes: a
	// confirmed message survives the loss of a minority of them, and their
	// dead-lettering can be at least once (RabbitMQ >= 3.10).
	Quorum QueueType = "quorum"
)

// args are the queue's x-arguments, its type included.
func (q Queue) args() amqp.Table {
	if q.Type == "" || q.Type == Classic {
		return q.Args
	}
	args := amqp.Table{"x-queue-type": string(q.Type)}
	for k, v := range q.Args {
		args[k] = v
	}
	return args
}

func (q Queue) withDefaults() (Queue, error) {
	if q.Name == "" {
		return q, errors.New("queue Name is empty")
	}
	switch q.Type {
	case "":
		q.Type = Classic
	case Classic, Quorum:
	default:
		return q, fmt.Errorf("queue %s: Type %q: want %q or %q", q.Name, q.Type, Classic, Quorum)
	}
	if len(q.Keys) == 0 {
		q.Keys = []string{"#"}
	}
	return q, nil
}

// WithQueue declares a durable queue bound to the exchange with the given
// routing-key patterns (default "#"). Without a bound queue (or an alternate
// exchange) RabbitMQ has nowhere to put an event and Publish returns
// broker.ErrUnroutable. May be given several times. Default: none.
func WithQueue(q Queue) PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		q, err := q.withDefaults()
		if err != nil {
			return fmt.Errorf("WithQueue: %w", err)
		}
		o.queues = append(o.queues, q)
		return nil
	})
}

// WithWindow bounds how many messages may be in flight (accepted by Publish
// and awaiting their confirm) at once; further publishes wait, up to their
// ctx, for a free slot. Default 1024.
func WithWindow(n int) PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		if n < 1 {
			return fmt.Errorf("WithWindow(%d): must be at least 1", n)
		}
		o.window = n
		return nil
	})
}

// WithCloudEvents publishes in CloudEvents binary content mode, with
// source as the source attribute (a URI-reference, e.g. "/orders-service"):
// beside the usual properties and headers each message carries the
// headers cloudEvents:id (Message.ID), cloudEvents:source,
// cloudEvents:specversion ("1.0"), cloudEvents:type (Message.Name),
// cloudEvents:time (Message.Time, RFC 3339 UTC) and, when the message has
// a key, cloudEvents:partitionkey (Message.Key); content_type is the data's
// media type and the body, unchanged, the data. The prefix is the
// CloudEvents AMQP binding's (see the package doc for why this one).
// Consumers that know only this library's properties and headers see no
// difference. Default: Config.CloudEventsSource
// (MESSAGE_BROKER_CLOUDEVENTS_SOURCE), empty meaning off. The subscriber
// reads CloudEvents headers whatever this says.
func WithCloudEvents(source string) PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		if err := broker.CheckCloudEventsSource(source); err != nil {
			return fmt.Errorf("WithCloudEvents: %w", err)
		}
		o.ceSource = source
		return nil
	})
}

// DefaultMaxMessageSize is the largest body a publisher sends unless
// [WithMaxMessageSize] says otherwise: 16 MiB, RabbitMQ 4's default
// max_message_size.
const DefaultMaxMessageSize = 16 << 20

// WithMaxMessageSize refuses bodies larger than n bytes with
// broker.ErrTooLarge before sending them. Set it to the server's
// max_message_size (RabbitMQ 3.x: 128 MiB by default, RabbitMQ 4: 16 MiB).
// A larger message still sent makes RabbitMQ close the channel; the adapter
// then fails that message alone with broker.ErrTooLarge, learns the
// server's limit from the close reason and applies it from then on; the
// other messages are re-sent. Default [DefaultMaxMessageSize].
func WithMaxMessageSize(n int) PublisherOption {
	return publisherOption(func(o *publisherOptions) error {
		if n < 1 {
			return fmt.Errorf("WithMaxMessageSize(%d): must be positive", n)
		}
		o.maxMessageSize = n
		return nil
	})
}

// Subscriber options.

// defaultPrefetch is the least prefetch by default: with the 4 × concurrency
// used before, the consumer waited for the broker's round trip between
// deliveries (a bench/ smoke run: 256 consumed 1.2-1.3x as fast at
// concurrency 1 and 16; Spring AMQP's default is 250 for the same reason).
const defaultPrefetch = 256

// WithPrefetch sets how many unacknowledged deliveries the broker may push
// to the subscriber at once (basic.qos). Default 256, or 4 × concurrency
// if that is more. A lower value returns fewer unhandled deliveries to the
// queue when the connection is lost (on a quorum queue each such return
// counts in x-delivery-count); a higher one only helps handlers that wait.
func WithPrefetch(n int) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithPrefetch(%d): must be at least 1", n)
		}
		o.prefetch = n
		return nil
	})
}

// WithConcurrency sets how many handlers run at once: up to n, never two
// deliveries of one key at once (Delivery.Key: the broker.HeaderKey header
// our publisher sets from Message.Key), and each key's deliveries in queue
// order, a failed one retried before the next of its key starts (see
// [WithRetryBackoff]). Deliveries without a key are not ordered among
// themselves. Keep [WithPrefetch] well above n (the default does), so that
// n keys with deliveries waiting can be found in the window. Default 1.
func WithConcurrency(n int) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithConcurrency(%d): must be at least 1", n)
		}
		o.concurrency = n
		return nil
	})
}

// WithUnordered lets the handlers take deliveries in any order, keys
// ignored, for handlers that do not care (each delivery is still retried
// in place, and dead-lettered like the others). Default: ordered by key.
func WithUnordered() SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		o.unordered = true
		return nil
	})
}

// WithMaxAttempts bounds how often a delivery is handled before it is
// dead-lettered. Default 5.
func WithMaxAttempts(n int) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		o.maxAttempts = n
		return nil
	})
}

// WithRetryBackoff sets the wait before a failed delivery is handled
// again: before retry n it is a random draw in [0, min(max,
// first·2^(n-1))] (exponential backoff with full jitter). The delivery
// stays unacknowledged in the subscriber meanwhile, holding its key (the
// key's later deliveries wait; other keys go on) and a prefetch slot; so
// (WithMaxAttempts - 1) × max may not exceed 20 minutes, well under
// RabbitMQ's consumer_timeout. Default 100ms and 5s.
func WithRetryBackoff(first, max time.Duration) SubscriberOption {
	return subscriberOption(func(o *subscriberOptions) error {
		if first <= 0 || max < first {
			return fmt.Errorf("WithRetryBackoff(%v, %v): want 0 < first <= max", first, max)
		}
		o.retryMin, o.retryMax = first, max
		return nil
	})
}
