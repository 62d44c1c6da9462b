package rabbitmq

import (
	"context"
	"maps"

	"github.com/domainevents/domainevents/broker"
)

// NewDeadLetterSink connects as cfg says and returns the broker-side
// dead-letter destination for messages RabbitMQ refused (unroutable,
// nacked, too large): a durable topic exchange "<exchange>.dlx" with a
// durable queue "<exchange>.dlq" bound to everything ("#"), declared on
// every (re)connect. Each message keeps its body, message_id, type, routing
// key and headers, plus the broker.HeaderDeadLetter* headers giving the
// reason and [HeaderOriginalExchange] and [HeaderOriginalRoutingKey]
// saying where it was going ([Redrive] sends it there). ctx bounds
// connecting only. It takes the publisher's options; [WithAlternateExchange]
// does not apply to "<exchange>.dlx", which routes everything to its queue.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*broker.BrokerSink, error) {
	cfg, o, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	queue := cfg.Exchange + ".dlq"
	o.queues = []Queue{{Name: queue, Keys: []string{"#"}}}
	dlx := topicExchange(cfg.Exchange+".dlx", "", o.conn.passive)
	b, err := start(ctx, "rabbitmq dead-letter sink", cfg, dlx, o)
	if err != nil {
		return nil, err
	}
	return broker.NewBrokerSink(origin{b, cfg.Exchange}, "rabbitmq queue "+queue), nil
}

// origin publishes through the dead-letter exchange, adding where each
// message was going: the exchange, and its name as the routing key.
type origin struct {
	*Broker
	exchange string
}

func (o origin) Publish(ctx context.Context, m broker.Message) error {
	h := make(map[string]string, len(m.Headers)+2)
	maps.Copy(h, m.Headers)
	h[HeaderOriginalExchange], h[HeaderOriginalRoutingKey] = o.exchange, m.Name
	m.Headers = h
	return o.Broker.Publish(ctx, m)
}
