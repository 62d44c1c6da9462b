package domainevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/outbox"
)

// OpenSubscriber starts consuming as cfg says into h (usually
// bridge.NewHandler over an eventbus, so that handlers get typed events):
// on RabbitMQ the queue cfg.Queue (MESSAGE_BROKER_QUEUE, required), bound
// to the exchange for every routing key, with its retry and dead-letter
// queues; on Kafka cfg.Topic in the consumer group cfg.ClientID. Like
// [Open] it starts while the broker is down and connects in the background
// (see [WithWaitForConnection]); the subscriber's Health says when it
// consumes. Wrong credentials or a virtual host the user may not open are
// retried too (an operator may fix them), logged at Error at most every
// 30s, and Health then returns an error matching broker.ErrUnauthorized
// that says so: wire it to the readiness probe. ctx bounds OpenSubscriber
// itself. With cfg.Enabled false there
// is nothing to consume from: an error matching broker.ErrInvalid.
//
// [WithInbox] puts an outbox.Inbox in front of h (each event id handled
// once, in its key's commit order, in one transaction with h's writes);
// [WithHandlerMiddleware] wraps the whole (instrumentation). The durable
// consumer, in a handful of statements:
//
//	store, err := outbox.New(db, outbox.Postgres)
//	bus := eventbus.New()
//	eventbus.Subscribe(bus, billOrder) // typed: func(ctx, events.OrderCreated) error
//	h, err := bridge.NewHandler(bus)
//	sub, err := domainevents.OpenSubscriber(ctx, cfg, h, domainevents.WithInbox(store, "billing"))
//	defer sub.Close(ctx) // the subscriber, then the inbox
//
// What keeps failing goes to the broker's dead-letter queue (RabbitMQ
// "<queue>.dlq", Kafka "<topic>.dlq") with its reason headers.
func OpenSubscriber(ctx context.Context, cfg broker.Config, h broker.Handler, opts ...SubscriberOption) (broker.Subscriber, error) {
	c := subscriberConfig{common: common{logger: slog.Default()}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applySubscriber(&c); err != nil {
			return nil, invalid(err)
		}
	}
	if !cfg.Enabled {
		return nil, invalid(errors.New(broker.EnvEnabled + " is false: there is no broker to consume from"))
	}
	if h == nil {
		return nil, invalid(errors.New("OpenSubscriber: handler is nil"))
	}
	if c.inbox == nil {
		return openSubscriber(ctx, cfg, wrap(h, c.middleware), c)
	}
	io := []outbox.InboxOption{outbox.WithInboxLogger(c.logger)}
	if c.observer != nil {
		io = append(io, outbox.WithInboxObserver(c.observer))
	}
	in, err := outbox.NewInbox(c.inbox.store, c.inbox.consumer, append(io, c.inbox.opts...)...)
	if err != nil {
		return nil, err
	}
	sub, err := openSubscriber(ctx, cfg, wrap(in.Handler(h), c.middleware), c)
	if err != nil {
		_ = in.Close(ctx)
		return nil, err
	}
	return &inboxSubscriber{Subscriber: sub, in: in}, nil
}

func wrap(h broker.Handler, mw []func(broker.Handler) broker.Handler) broker.Handler {
	for _, m := range mw {
		h = m(h)
	}
	return h
}

// inboxSubscriber is a subscriber with the inbox in front of its handler.
type inboxSubscriber struct {
	broker.Subscriber
	in *outbox.Inbox
}

// Close closes the subscriber (its running handlers finish), then the
// inbox's cleanup.
func (s *inboxSubscriber) Close(ctx context.Context) error {
	err := s.Subscriber.Close(ctx)
	return errors.Join(err, s.in.Close(ctx))
}

// Health is the subscriber's.
func (s *inboxSubscriber) Health(ctx context.Context) error {
	if hc, ok := s.Subscriber.(broker.HealthChecker); ok {
		return hc.Health(ctx)
	}
	return nil
}

// InboxOf returns the inbox [WithInbox] put in front of a subscriber
// [OpenSubscriber] returned, or nil when it has none: to list the keys a
// gap blocks (outbox.Inbox.Blocked) or give one up (outbox.Inbox.Skip).
func InboxOf(sub broker.Subscriber) *outbox.Inbox {
	if s, ok := sub.(*inboxSubscriber); ok {
		return s.in
	}
	return nil
}

func openSubscriber(ctx context.Context, cfg broker.Config, h broker.Handler, c subscriberConfig) (broker.Subscriber, error) {
	switch cfg.Type {
	case broker.RabbitMQ:
		if cfg.Queue == "" {
			return nil, invalid(fmt.Errorf("%s is empty: name the queue to consume", broker.EnvQueue))
		}
		o := []rabbitmq.SubscriberOption{rabbitmq.WithLogger(c.logger)}
		if !c.wait {
			o = append(o, rabbitmq.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, rabbitmq.WithObserver(c.observer))
		}
		return rabbitmq.NewSubscriber(ctx, cfg, rabbitmq.Queue{Name: cfg.Queue, Keys: []string{"#"}}, h, append(o, c.rabbit...)...)
	case broker.Kafka:
		o := []kafka.SubscriberOption{kafka.WithLogger(c.logger)}
		if !c.wait {
			o = append(o, kafka.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, kafka.WithObserver(c.observer))
		}
		return kafka.NewSubscriber(ctx, cfg, cfg.ClientID, h, append(o, c.kafka...)...)
	}
	return nil, invalid(fmt.Errorf("%s=%q: unknown broker type", broker.EnvType, cfg.Type))
}
