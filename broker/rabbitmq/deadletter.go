package rabbitmq

import (
	"context"

	"github.com/domainevents/domainevents/broker"
)

// NewDeadLetterSink connects as cfg says and returns the broker-side
// dead-letter destination for messages RabbitMQ refused (unroutable,
// nacked, too large): a durable topic exchange "<exchange>.dlx" with a
// durable queue "<exchange>.dlq" bound to everything ("#"), declared on
// every (re)connect. Each message keeps its body, message_id, type, routing
// key and headers, plus the broker.HeaderDeadLetter* headers giving the
// reason. ctx bounds connecting only.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*broker.BrokerSink, error) {
	cfg, o, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	queue := cfg.Exchange + ".dlq"
	o.queues = []Queue{{Name: queue, Keys: []string{"#"}}}
	o.alternate = ""
	b, err := start(ctx, "rabbitmq dead-letter sink", cfg, cfg.Exchange+".dlx", o)
	if err != nil {
		return nil, err
	}
	return broker.NewBrokerSink(b, "rabbitmq queue "+queue), nil
}
