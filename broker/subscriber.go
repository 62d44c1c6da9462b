package broker

import (
	"context"
	"errors"
)

// Delivery is a message received from a broker.
type Delivery struct {
	// Message as it was published: id, name, key, body, content type,
	// headers, time.
	Message
	// Attempt is 1 the first time the message is handled and n on the n-th
	// attempt after handler failures.
	Attempt int
	// Seq is the message's number in its key's sequence (the [HeaderSeq]
	// header, which stays in Headers too), 0 when it has none: a message
	// published without the outbox.
	Seq int64
	// Source says where it came from, for logs: "queue billing.orders" or
	// "topic orders.events[2]@1234".
	Source string
	// Origin says the same for instrumentation, field by field.
	Origin Origin
}

// Origin is where a delivery came from.
type Origin struct {
	// System is "rabbitmq" or "kafka".
	System string
	// Destination is the queue (RabbitMQ) or topic (Kafka) consumed.
	Destination string
	// Exchange and RoutingKey the message was published with (RabbitMQ).
	Exchange, RoutingKey string
	// Partition and Offset of the record (Kafka); Partition is -1 where
	// there is none.
	Partition int32
	Offset    int64
	// ConsumerGroup is the Kafka consumer group.
	ConsumerGroup string
}

// Handler handles one delivery. Returning nil acknowledges it (RabbitMQ
// ack, Kafka offset commit). An error makes the subscriber retry it later,
// up to its attempt limit, then dead-letter it with the error as the reason;
// an error matching [ErrInvalid] (a body that cannot be decoded, say) is
// dead-lettered at once. A panic counts as an error.
//
// Delivery is at least once: after a connection loss or a rebalance a
// message may be handled again. Deduplicate on Delivery.ID (bridge.Dedup
// within one process, an inbox table across processes).
type Handler func(ctx context.Context, d Delivery) error

// Subscriber consumes until Close.
//
// Close(ctx) stops fetching, lets the handlers that are running finish,
// acknowledges (or commits) what finished, then disconnects. If ctx ends
// first, the running handlers' ctx is cancelled and what they did not finish
// is delivered again later. A second Close returns nil.
type Subscriber interface {
	Close(ctx context.Context) error
}

// Permanent reports whether a handler error should skip the retries: it
// matches [ErrInvalid].
func Permanent(err error) bool { return errors.Is(err, ErrInvalid) }
