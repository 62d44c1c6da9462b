package rabbitmq

import (
	"context"
	"slices"

	"github.com/domainevents/domainevents/broker"
)

// DeadLetterSink is the broker-side dead-letter destination for messages
// RabbitMQ refused (unroutable, nacked, too large): a durable topic exchange
// named "<exchange>.dlx" with a durable queue "<exchange>.dlq" bound to
// everything ("#"). Each message keeps its body, message_id, type, routing
// key and headers, plus the broker.HeaderDeadLetter* headers giving the reason.
// It implements broker.DeadLetterSink.
type DeadLetterSink struct {
	b     *Broker
	queue string
}

// NewDeadLetterSink connects as cfg says and declares the dead-letter
// exchange and queue for cfg.Exchange. opts are connection options (logger,
// TLS, heartbeat, URLs...).
func NewDeadLetterSink(ctx context.Context, cfg broker.Config, opts ...Option) (*DeadLetterSink, error) {
	queue := cfg.Exchange + ".dlq"
	cfg.Exchange += ".dlx"
	opts = append(slices.Clip(opts), WithQueue(Queue{Name: queue, Keys: []string{"#"}}))
	b, err := New(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return &DeadLetterSink{b: b, queue: queue}, nil
}

// Put publishes the entry's message with its reason headers and waits for
// the confirm.
func (s *DeadLetterSink) Put(ctx context.Context, e broker.DeadLetter) error {
	return s.b.Publish(ctx, e.Annotated())
}

// Close closes the sink's connection, waiting for outstanding confirms.
func (s *DeadLetterSink) Close(ctx context.Context) error { return s.b.Close(ctx) }

// String names the destination: "rabbitmq queue <exchange>.dlq".
func (s *DeadLetterSink) String() string { return "rabbitmq queue " + s.queue }
