package kafka

import (
	"context"
	"maps"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
)

// Headers a dead letter carries besides the broker.HeaderDeadLetter* ones:
// where the record was going, so that [Redrive] can send it back.
const (
	// HeaderOriginalTopic is the topic the record was published to (the
	// publisher's dead letters) or consumed from (the subscriber's).
	HeaderOriginalTopic = "x-original-topic"
	// HeaderOriginalPartition and HeaderOriginalOffset say where the
	// subscriber consumed it (the subscriber's dead letters only).
	HeaderOriginalPartition = "x-original-partition"
	HeaderOriginalOffset    = "x-original-offset"
)

// NewDeadLetterSink connects as cfg says and returns the broker-side
// dead-letter destination for records Kafka refused for good (too large,
// unauthorized, invalid): a broker.BrokerSink producing to the topic
// cfg.Topic+".dlq", which must exist or be auto-created. Each record keeps
// its key, value and headers, plus the broker.HeaderDeadLetter* headers
// giving the reason and [HeaderOriginalTopic]; Put returns once the record is acknowledged with
// acks=all. opts are the publisher's (SASL, TLS, a sarama config, lazy
// connect, the partitioner...); WithTopicPerEvent is ignored: dead letters
// go to one topic. ctx bounds connecting, as in [New]. The sink's String
// is "kafka topic <topic>.dlq"; its Close closes the producer.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*broker.BrokerSink, error) {
	cfg, o, sc, err := publisherSetup(cfg, opts)
	if err != nil {
		return nil, err
	}
	perEvent := o.topicPerEvent
	b, err := deadLetterBroker(ctx, cfg, o, sc, "kafka dead-letter sink")
	if err != nil {
		return nil, err
	}
	return broker.NewBrokerSink(origin{b, cfg.Topic, perEvent}, "kafka topic "+b.topic), nil
}

// origin produces dead letters adding the topic each record was going to.
type origin struct {
	*Broker
	topic    string
	perEvent bool // WithTopicPerEvent: the event name is the topic
}

func (o origin) Publish(ctx context.Context, m broker.Message) error {
	h := make(map[string]string, len(m.Headers)+1)
	maps.Copy(h, m.Headers)
	h[HeaderOriginalTopic] = o.topic
	if o.perEvent {
		h[HeaderOriginalTopic] = m.Name
	}
	m.Headers = h
	return o.Broker.Publish(ctx, m)
}

// deadLetterBroker starts a publisher for cfg.Topic+".dlq" (cfg checked)
// with the options o and their sarama configuration sc, on one topic
// whatever o says.
func deadLetterBroker(ctx context.Context, cfg broker.Config, o publisherOptions, sc *sarama.Config, component string) (*Broker, error) {
	o.topicPerEvent = false
	topic := cfg.Topic + ".dlq"
	return start(ctx, o, cfg.Addrs(), topic, component, dialProducer(cfg.Addrs(), sc, topic, true))
}
