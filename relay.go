package domainevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/noop"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/outbox"
)

// Relay is what [OpenRelay] returns: an outbox.Relay publishing a Store's
// rows through the adapter cfg.Type names, and that adapter. It is a
// broker.HealthChecker, safe for concurrent use.
type Relay struct {
	relay   *outbox.Relay
	adapter broker.Broker // with the middleware, if any; closed after the relay
	where   string
	log     *slog.Logger

	closeMu sync.Mutex
	closed  bool
}

// OpenRelay starts a relay publishing store's rows to the broker cfg
// describes (usually broker.ConfigFromEnv(): the same MESSAGE_BROKER_*
// configuration as [Open]), in one call:
//
//   - the adapter of cfg.Type, connecting in the background: the relay
//     starts while the broker is down, and its rows wait in the table
//     meanwhile ([WithWaitForConnection] waits for a first connection
//     instead); on RabbitMQ, cfg.Queue is declared and bound to the
//     exchange for every routing key, as Open does;
//   - no retry layer and no spool in front of it: the outbox table is the
//     durable store, the relay retries for as long as the broker is away,
//     and a spool would let a key's later events overtake an earlier one;
//   - the relay (outbox.NewRelay, with [WithLogger], [WithObserver] and the
//     options of [WithOutboxRelay]).
//
// With cfg.Enabled false, the relay publishes to the noop broker (or
// [WithDisabledBroker]): the rows are marked published and go nowhere, as
// Open's events do.
//
// Write-time checks: the store refuses messages over its own limit
// (outbox.WithMaxMessageSize). Give outbox.New the configured broker's
// limit, [MaxMessageSize](cfg), so that what the broker would refuse fails
// the writer's transaction; OpenRelay logs a warning when the store's
// limit is above it.
//
// ctx bounds OpenRelay itself (and the first connection with
// WithWaitForConnection). A nil store, a bad cfg or option is an error
// matching broker.ErrInvalid that names it. Close the Relay when the
// service stops, before the store's *sql.DB.
func OpenRelay(ctx context.Context, cfg broker.Config, store *outbox.Store, opts ...RelayOption) (*Relay, error) {
	c := relayConfig{common: common{logger: slog.Default()}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyRelay(&c); err != nil {
			return nil, invalid(err)
		}
	}
	if store == nil {
		return nil, invalid(errors.New("OpenRelay: store is nil"))
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{log: c.logger}
	var err error
	if r.adapter, r.where, err = openRelayAdapter(ctx, cfg, c); err != nil {
		return nil, err
	}
	hc, _ := r.adapter.(broker.HealthChecker)
	for _, mw := range c.middleware {
		r.adapter = mw(r.adapter)
	}
	if _, ok := r.adapter.(broker.HealthChecker); !ok && hc != nil {
		// The relay learns from the adapter's Health when the broker is
		// away and back: keep it visible through a middleware that hides it.
		r.adapter = healthOf{Broker: r.adapter, hc: hc}
	}
	if limit := MaxMessageSize(cfg); cfg.Enabled && store.MaxMessageSize() > limit {
		r.log.Warn("domainevents: the outbox store takes messages larger than the broker's default limit: they would fail in the relay instead of failing the writer's transaction; "+
			"give outbox.New outbox.WithMaxMessageSize(domainevents.MaxMessageSize(cfg))",
			"store_limit", store.MaxMessageSize(), "broker_limit", limit, "broker", cfg.Type)
	}
	ro := []outbox.RelayOption{outbox.WithLogger(c.logger)}
	if c.observer != nil {
		ro = append(ro, outbox.WithObserver(c.observer))
	}
	if r.relay, err = outbox.NewRelay(store, r.adapter, append(ro, c.outbox...)...); err != nil {
		_ = r.adapter.Close(ctx)
		return nil, err
	}
	r.log.Info("domainevents: outbox relay ready", "config", cfg, "destination", r.where, "owner", r.relay.Owner())
	return r, nil
}

// openRelayAdapter opens the adapter of cfg, lazily unless the options
// say to wait, with no retry layer and no spool.
func openRelayAdapter(ctx context.Context, cfg broker.Config, c relayConfig) (broker.Broker, string, error) {
	if !cfg.Enabled {
		c.logger.Warn("domainevents: MESSAGE_BROKER_ENABLED is false: the outbox relay marks events published without sending them anywhere")
		if c.noop != nil {
			return c.noop, "nowhere (MESSAGE_BROKER_ENABLED is false)", nil
		}
		return noop.New(), "nowhere (MESSAGE_BROKER_ENABLED is false)", nil
	}
	switch cfg.Type {
	case broker.RabbitMQ:
		o := []rabbitmq.PublisherOption{rabbitmq.WithLogger(c.logger)}
		if !c.wait {
			o = append(o, rabbitmq.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, rabbitmq.WithObserver(c.observer))
		}
		where := fmt.Sprintf("RabbitMQ exchange %q at %v", cfg.Exchange, cfg.Addrs())
		if cfg.Queue != "" {
			o = append(o, rabbitmq.WithQueue(rabbitmq.Queue{Name: cfg.Queue, Keys: []string{"#"}}))
			where += fmt.Sprintf(", queue %q bound to it", cfg.Queue)
		}
		b, err := rabbitmq.New(ctx, cfg, append(o, c.rabbit...)...)
		return b, where, err
	case broker.Kafka:
		o := []kafka.PublisherOption{kafka.WithLogger(c.logger)}
		if !c.wait {
			o = append(o, kafka.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, kafka.WithObserver(c.observer))
		}
		b, err := kafka.New(ctx, cfg, append(o, c.kafka...)...)
		return b, fmt.Sprintf("Kafka topic %q at %v", cfg.Topic, cfg.Addrs()), err
	}
	return nil, "", invalid(fmt.Errorf("%s=%q: unknown broker type", broker.EnvType, cfg.Type))
}

// healthOf is a broker with the Health of another (the adapter under a
// middleware).
type healthOf struct {
	broker.Broker
	hc broker.HealthChecker
}

func (h healthOf) Health(ctx context.Context) error { return h.hc.Health(ctx) }

// MaxMessageSize is the largest message the broker cfg names takes with
// the adapter's defaults, as outbox.WithMaxMessageSize counts it (body,
// headers, id, name, key and content type): RabbitMQ 16 MiB (the
// adapter's rabbitmq.WithMaxMessageSize default; set both lower if the
// server's max_message_size is), Kafka 1 MiB, sarama's
// Producer.MaxMessageBytes, less 1 KiB for the headers the adapter adds
// and the record's framing. With the broker disabled, the outbox's own
// default.
func MaxMessageSize(cfg broker.Config) int {
	if !cfg.Enabled {
		return outbox.DefaultMaxMessageSize
	}
	switch cfg.Type {
	case broker.Kafka:
		return kafka.DefaultMaxRecordSize - 1024
	case broker.RabbitMQ:
		return rabbitmq.DefaultMaxMessageSize
	}
	return outbox.DefaultMaxMessageSize
}

// Health reports whether the relay can do its work: nil when the database
// answers and the broker takes the relay's messages; otherwise what is
// wrong, each problem matching its category (outbox.ErrDatabase for the
// database; broker.ErrUnavailable while the broker is away;
// broker.ErrUnroutable, broker.ErrUnauthorized or broker.ErrRejected while
// it refuses the messages, whose rows wait until it is fixed), or
// broker.ErrClosed after Close. See outbox.Relay.Health. It is what a
// readiness probe calls.
func (r *Relay) Health(ctx context.Context) error {
	r.closeMu.Lock()
	closed := r.closed
	r.closeMu.Unlock()
	if closed {
		return &broker.Error{Op: "domainevents: relay", Kind: broker.ErrClosed}
	}
	return r.relay.Health(ctx)
}

// Stats returns the relay's counters (outbox.Relay.Stats).
func (r *Relay) Stats() outbox.RelayStats { return r.relay.Stats() }

// Owner returns the lease owner id the relay writes into the rows it
// claims.
func (r *Relay) Owner() string { return r.relay.Owner() }

// Destination says where the relay publishes.
func (r *Relay) Destination() string { return r.where }

// Close stops the relay (it lets the publishes in flight finish and gives
// up its leases, see outbox.Relay.Close), then closes the adapter, within
// ctx. It does not close the store or its *sql.DB. It returns both
// errors joined; a second Close returns nil.
func (r *Relay) Close(ctx context.Context) error {
	r.closeMu.Lock()
	if r.closed {
		r.closeMu.Unlock()
		return nil
	}
	r.closed = true
	r.closeMu.Unlock()
	err := r.relay.Close(ctx)
	return errors.Join(err, r.adapter.Close(ctx))
}
