package kafka

import (
	"context"
	"fmt"

	"github.com/domainevents/domainevents/broker"
)

// NewDeadLetterSink connects as cfg says and returns the broker-side
// dead-letter destination for records Kafka refused for good (too large,
// unauthorized, invalid): a broker.BrokerSink producing to the topic
// cfg.Topic+".dlq", which must exist or be auto-created. Each record keeps
// its key, value and headers, plus the broker.HeaderDeadLetter* headers
// giving the reason; Put returns once the record is acknowledged with
// acks=all. opts are connection options only; ctx bounds connecting, as in
// [New]. The sink's String is "kafka topic <topic>.dlq"; its Close closes
// the producer.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...Option) (*broker.BrokerSink, error) {
	popts := make([]PublisherOption, len(opts))
	for i, o := range opts {
		popts[i] = o
	}
	cfg, o, _, err := publisherSetup(cfg, popts)
	if err != nil {
		return nil, err
	}
	b, err := deadLetterBroker(ctx, cfg, o.connOptions, "kafka dead-letter sink")
	if err != nil {
		return nil, err
	}
	return broker.NewBrokerSink(b, "kafka topic "+b.topic), nil
}

// deadLetterBroker starts a publisher for cfg.Topic+".dlq" (cfg checked)
// with the connection options conn and the publisher's defaults.
func deadLetterBroker(ctx context.Context, cfg broker.Config, conn connOptions, component string) (*Broker, error) {
	o := defaultPublisher()
	o.connOptions = conn
	sc, err := saramaConfig(cfg, conn)
	if err != nil {
		return nil, configErr(err)
	}
	sc.Producer.Partitioner = o.partitioner
	if err := sc.Validate(); err != nil {
		return nil, configErr(fmt.Errorf("sarama config: %w", err))
	}
	topic := cfg.Topic + ".dlq"
	return start(ctx, o, cfg.Addrs(), topic, component, dialProducer(cfg.Addrs(), sc, topic, true))
}
