package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"
)

// ContentTypeJSON is the content type of event bodies.
const ContentTypeJSON = "application/json"

// Header names carrying a message's aggregate key and its place in the
// key's sequence (RabbitMQ message headers, Kafka record headers), beside
// the dead-letter headers (HeaderDeadLetterReason...).
const (
	// HeaderKey carries Message.Key on RabbitMQ, which has no record key:
	// the adapter sets it on publish and reads it back into the
	// delivery's Key (Kafka carries the key as the record key).
	HeaderKey = "event-key"
	// HeaderSeq carries the message's number in its key's sequence
	// (decimal, from 1: the order in which the producer's transactions on
	// that key committed), set by the outbox's relay on both brokers and
	// read into [Delivery].Seq. Messages published without the outbox have
	// none.
	HeaderSeq = "event-seq"
)

// Message is what a [Broker] publishes: an encoded event plus what the broker
// needs to route it. Adapters map it onto the wire (see each adapter's doc).
type Message struct {
	// ID is the event id, the idempotency key consumers deduplicate on.
	// RabbitMQ: message_id; Kafka: the "event-id" record header. Required.
	ID string
	// Name is the event name, e.g. "order.created". RabbitMQ: routing key and
	// type; Kafka: the "event-name" record header (and the topic, with
	// per-event topics). Required.
	Name string
	// Key is the aggregate id (the order id). Kafka: the record key, so that
	// one order's events share a partition and stay in order; RabbitMQ: the
	// [HeaderKey] header. Consumers handle one key's messages in order.
	Key string
	// Body is the payload, for events the JSON envelope.
	Body []byte
	// ContentType of Body, e.g. [ContentTypeJSON]. Empty means unspecified.
	ContentType string
	// Headers are extra string headers carried to consumers (RabbitMQ
	// message headers, Kafka record headers), e.g. W3C traceparent.
	Headers map[string]string
	// Time is when the event happened; zero means "now" at publish.
	Time time.Time
}

// Validate reports a message that no broker could publish, as an error
// matching [ErrInvalid] that names the field.
func (m Message) Validate() error {
	switch {
	case m.ID == "":
		return &Error{Op: "broker: validate", Kind: ErrInvalid, Err: errors.New("message ID is empty")}
	case m.Name == "":
		return &Error{Op: "broker: validate", Kind: ErrInvalid, Err: fmt.Errorf("message %s: Name is empty", m.ID)}
	}
	return nil
}

// Clone returns a copy of m that shares nothing with it.
func (m Message) Clone() Message {
	m.Body = append([]byte(nil), m.Body...)
	m.Headers = maps.Clone(m.Headers)
	return m
}

// Broker publishes messages to a message broker.
//
// # Contract
//
// Implementations are safe for concurrent use; concurrent Publish calls are
// pipelined (many in flight at once), each caller waiting only for its own
// message.
//
// Publish returns nil only after the broker has durably accepted the message
// (RabbitMQ: a publisher confirm of a routed, persistent message; Kafka:
// acks=all). Any other outcome is an error matching one of the Err*
// categories of this package (see [Category] for the one exception);
// [IsRetryable] tells whether trying again may help. A ctx that is already done returns ctx.Err() as is. A ctx that ends
// after the message was handed to the connection returns an error matching
// both ctx.Err() and [ErrUnavailable]: the outcome is unknown and the message
// may still be delivered (the adapter keeps it in flight until Close), so
// duplicates are possible; loss of an acknowledged message is not.
//
// Publish does not modify msg. It may keep references to msg.Body and
// msg.Headers after it returns (when ctx ended first): callers must not
// change them afterwards.
//
// Close stops accepting messages (Publish then returns [ErrClosed]), waits
// for the outcome of those in flight, then releases the connection. It
// returns ctx.Err() if ctx ends first, having still released everything.
// Calling Close again returns nil.
type Broker interface {
	Publish(ctx context.Context, msg Message) error
	Close(ctx context.Context) error
}

// Describer is implemented by brokers that can say where they send a
// message: what instrumentation records as its destination. Decorators
// (retry, domainevents.Publisher) pass the question on to what they wrap.
type Describer interface {
	Describe(m Message) Destination
}

// Destination is where a broker sends a message.
type Destination struct {
	// System is "rabbitmq" or "kafka" ("" for a broker that sends nowhere).
	System string
	// Name is the exchange (RabbitMQ) or topic (Kafka).
	Name string
	// RoutingKey is the routing key (RabbitMQ).
	RoutingKey string
}
