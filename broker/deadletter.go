package broker

import (
	"context"
	"maps"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/internal/reason"
)

// DeadLetter is a message that could not be published or handled,
// unchanged, with why.
type DeadLetter struct {
	// Message is the original message: body, headers, key, name and id as
	// they were given to Publish (or received, on the consuming side).
	Message Message
	// Reason is the last error's text.
	Reason string
	// Category is [Category] of the last error ("unavailable",
	// "unroutable", ...), or [CategoryHandlerFailed] for a delivery whose
	// handler kept failing.
	Category string
	// Attempts is how many publishes (or handler calls) were tried.
	Attempts int
	// FirstFailure and LastFailure bound the failed attempts.
	FirstFailure time.Time
	LastFailure  time.Time
}

// Header names carrying the reason of a dead letter on broker-side
// dead-letter destinations (RabbitMQ message headers, Kafka record headers).
// The reason header is one line of at most [MaxDeadLetterReason] bytes.
const (
	HeaderDeadLetterReason       = "dead-letter-reason"
	HeaderDeadLetterCategory     = "dead-letter-category"
	HeaderDeadLetterAttempts     = "dead-letter-attempts"
	HeaderDeadLetterFirstFailure = "dead-letter-first-failure"
	HeaderDeadLetterLastFailure  = "dead-letter-last-failure"
)

// MaxDeadLetterReason bounds the dead-letter-reason header, in bytes.
const MaxDeadLetterReason = 512

// Annotated returns d.Message with the dead-letter headers added (reason,
// category, attempts, first and last failure in RFC 3339 UTC); body, id,
// name, key and content type are unchanged and d.Message.Headers is not
// modified. Broker-side dead-letter destinations publish it. The reason is
// written on one line (line breaks become "; ") and cut to
// [MaxDeadLetterReason] bytes.
func (d DeadLetter) Annotated() Message {
	m := d.Message
	h := make(map[string]string, len(m.Headers)+5)
	maps.Copy(h, m.Headers)
	h[HeaderDeadLetterReason] = reason.Line(d.Reason, MaxDeadLetterReason)
	h[HeaderDeadLetterCategory] = d.Category
	h[HeaderDeadLetterAttempts] = strconv.Itoa(d.Attempts)
	if !d.FirstFailure.IsZero() {
		h[HeaderDeadLetterFirstFailure] = d.FirstFailure.UTC().Format(time.RFC3339Nano)
	}
	if !d.LastFailure.IsZero() {
		h[HeaderDeadLetterLastFailure] = d.LastFailure.UTC().Format(time.RFC3339Nano)
	}
	m.Headers = h
	return m
}

// DeadLetterSink stores dead letters durably: Put returns nil only once the
// entry is safe (fsync'd to disk, or confirmed by the broker's dead-letter
// destination). Implementations are safe for concurrent use. The local
// spool is deadletter.Spool; the broker-side one is a [BrokerSink]
// (rabbitmq.NewDeadLetterSink and kafka.NewDeadLetterSink make one).
type DeadLetterSink interface {
	Put(ctx context.Context, d DeadLetter) error
}

// BrokerSink is a [DeadLetterSink] that publishes each dead letter,
// [DeadLetter.Annotated] with its reason, through a Broker pointed at a
// dead-letter destination, and returns once that broker confirmed it. Safe
// for concurrent use.
type BrokerSink struct {
	b    Broker
	name string
}

// NewBrokerSink returns a sink publishing through b; name says where the
// entries land ("rabbitmq queue orders.events.dlq"), for logs and errors.
// The sink owns b: its Close closes b.
func NewBrokerSink(b Broker, name string) *BrokerSink { return &BrokerSink{b: b, name: name} }

// Put publishes d.Annotated() and waits for the broker's confirm.
func (s *BrokerSink) Put(ctx context.Context, d DeadLetter) error {
	return s.b.Publish(ctx, d.Annotated())
}

// Close closes the broker, waiting for outstanding confirms.
func (s *BrokerSink) Close(ctx context.Context) error { return s.b.Close(ctx) }

// String returns the name given to [NewBrokerSink].
func (s *BrokerSink) String() string { return s.name }
