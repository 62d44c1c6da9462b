package kafka

import (
	"context"
	"slices"

	"github.com/domainevents/domainevents/broker"
)

// DeadLetterSink is the broker-side dead-letter destination for records
// Kafka refused for good (too large, unauthorized, invalid): the topic
// "<topic>.dlq", which must exist or be auto-created. Each record keeps its
// key, value and headers, plus the broker.HeaderDeadLetter* headers giving the
// reason. It implements broker.DeadLetterSink.
type DeadLetterSink struct {
	b     *Broker
	topic string
}

// NewDeadLetterSink connects as cfg says, for the topic cfg.Topic+".dlq".
// opts are connection options (logger, TLS, SASL, sarama config...);
// WithTopicPerEvent is ignored.
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...Option) (*DeadLetterSink, error) {
	if cfg.Topic == "" {
		cfg.Topic = broker.DefaultDestination
	}
	cfg.Topic += ".dlq"
	opts = append(slices.Clip(opts), func(o *options) error { o.topicPerEvent = false; return nil })
	b, err := New(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return &DeadLetterSink{b: b, topic: cfg.Topic}, nil
}

// Put produces the entry's message with its reason headers and waits for
// the acks=all acknowledgement.
func (s *DeadLetterSink) Put(ctx context.Context, e broker.DeadLetter) error {
	return s.b.Publish(ctx, e.Annotated())
}

// Close flushes and closes the sink's producer.
func (s *DeadLetterSink) Close(ctx context.Context) error { return s.b.Close(ctx) }

// String names the destination: "kafka topic <topic>.dlq".
func (s *DeadLetterSink) String() string { return "kafka topic " + s.topic }
