package broker

import (
	"context"
	"errors"
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

// NewDeadLetter is the one way to build a dead letter: m, given up with
// err after attempts attempts between first and last (a zero first is
// taken as last), its Reason err's text and its Category [Category](err).
// A subscriber whose handler failed sets Category to
// [CategoryHandlerFailed] afterwards; a nil err gives an empty Reason.
func NewDeadLetter(m Message, err error, attempts int, first, last time.Time) DeadLetter {
	if first.IsZero() {
		first = last
	}
	d := DeadLetter{Message: m, Attempts: attempts, FirstFailure: first, LastFailure: last}
	if err != nil {
		d.Reason, d.Category = err.Error(), Category(err)
	}
	return d
}

// RefusedForGood reports whether err says the broker will not take the
// message as it is, however often it is sent again (unroutable, rejected,
// too large, invalid, unauthorized): such a message belongs in the
// broker's own dead-letter destination. An unavailable broker, one being
// closed, and an ended ctx are not refusals: the message waits (spool,
// outbox) instead.
func RefusedForGood(err error) bool {
	return err != nil && !IsRetryable(err) && !errors.Is(err, ErrClosed) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
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
