package kafka

import (
	"context"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
)

// NewDeadLetterSink connects as cfg says and returns the broker-side
// dead-letter destination for records Kafka refused for good (too large,
// unauthorized, invalid): a broker.BrokerSink producing to the topic
// cfg.Topic+".dlq", which must exist or be auto-created. Each record keeps
// its key, value and headers, plus the broker.HeaderDeadLetter* headers
// giving the reason; Put returns once the record is acknowledged with
// acks=all. opts are the publisher's (SASL, TLS, a sarama config, lazy
// connect, the partitioner...); WithTopicPerEvent is ignored: dead letters
// go to one topic. ctx bounds connecting, as in [New]. The sink's String
// is "kafka topic <topic>.dlq"; its Close closes the producer.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*broker.BrokerSink, error) {
	cfg, o, sc, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	b, err := deadLetterBroker(ctx, cfg, o, sc, "kafka dead-letter sink")
	if err != nil {
		return nil, err
	}
	return broker.NewBrokerSink(b, "kafka topic "+b.topic), nil
}

// deadLetterBroker starts a publisher for cfg.Topic+".dlq" (cfg checked)
// with the options o and their sarama configuration sc, on one topic
// whatever o says.
func deadLetterBroker(ctx context.Context, cfg broker.Config, o publisherOptions, sc *sarama.Config, component string) (*Broker, error) {
	o.topicPerEvent = false
	topic := cfg.Topic + ".dlq"
	return start(ctx, o, cfg.Addrs(), topic, component, dialProducer(cfg.Addrs(), sc, topic, true))
}
