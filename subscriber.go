package domainevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
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
