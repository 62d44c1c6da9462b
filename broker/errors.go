package broker

import (
	"context"
	"errors"
)

// Error categories, used with errors.Is. Every error an adapter returns from
// Publish matches exactly one of them, with two exceptions: context errors
// of the caller's own ctx pass through unwrapped (errors.Is(err,
// context.DeadlineExceeded) works), and a message whose outcome is unknown
// because Close gave up waiting for its confirm matches both [ErrClosed]
// and [ErrUnavailable] (it may or may not have been stored).
var (
	// ErrClosed: the broker was closed; nothing more is accepted.
	ErrClosed = errors.New("broker closed")
	// ErrUnavailable: the broker cannot be reached or is not ready (connection
	// lost, leader election, not enough replicas). The only retryable category.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrUnroutable: the broker is up but had nowhere to put the message
	// (RabbitMQ: no queue bound for the routing key, or no such exchange;
	// Kafka: unknown topic).
	ErrUnroutable = errors.New("message unroutable")
	// ErrRejected: the broker answered and refused a message for a reason
	// no other category names (Kafka: an error code of its own). A RabbitMQ
	// nack is not one: a quorum queue nacks while it elects its leader, so
	// a nack is ErrUnavailable.
	ErrRejected = errors.New("message rejected by broker")
	// ErrTooLarge: the message exceeds the broker's size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrInvalid: the message or configuration is malformed (empty name,
	// bad config value), or a delivery cannot be decoded; retrying cannot
	// help.
	ErrInvalid = errors.New("invalid message or configuration")
	// ErrUnauthorized: bad credentials, or no permission for the vhost,
	// exchange or topic.
	ErrUnauthorized = errors.New("not authorized")
	// ErrDeadLettered: the message was not published, but it is safe in a
	// dead-letter sink (local spool or broker dead-letter queue) from which
	// it can be replayed. Not retryable: retrying would duplicate it.
	ErrDeadLettered = errors.New("dead-lettered")
)

// ErrOutcomeUnknown is not a category but a mark on an error that also
// matches [ErrUnavailable]: the message had been handed to the connection
// when the caller's ctx ended (or when Close gave up on it), so the broker
// may still store it and deliver it. An ErrUnavailable error without the
// mark says the message was never sent. Either way the message is not
// confirmed; retrying is safe but may duplicate an ErrOutcomeUnknown one
// (consumers deduplicate on the id).
var ErrOutcomeUnknown = errors.New("outcome unknown: the message may still be delivered")

// Category names used in logs, dead-letter headers and spool entries.
// [Category] returns the first eight for errors; CategoryHandlerFailed is
// what a subscriber records for a delivery whose handler kept failing.
const (
	CategoryDeadLettered     = "dead_lettered"
	CategoryClosed           = "closed"
	CategoryUnavailable      = "unavailable"
	CategoryUnroutable       = "unroutable"
	CategoryRejected         = "rejected"
	CategoryTooLarge         = "too_large"
	CategoryInvalid          = "invalid"
	CategoryUnauthorized     = "unauthorized"
	CategoryDeadlineExceeded = "deadline_exceeded"
	CategoryCanceled         = "canceled"
	CategoryUnknown          = "unknown"
	CategoryHandlerFailed    = "handler_failed"
)

// categories is the order in which [Category] tests an error: the most
// specific outcome first (a dead-lettered message wraps the error that sent
// it there; a closed broker's unknown outcome also matches ErrUnavailable).
var categories = []struct {
	err  error
	name string
}{
	{ErrDeadLettered, CategoryDeadLettered}, {ErrClosed, CategoryClosed}, {ErrUnavailable, CategoryUnavailable},
	{ErrUnroutable, CategoryUnroutable}, {ErrRejected, CategoryRejected}, {ErrTooLarge, CategoryTooLarge},
	{ErrInvalid, CategoryInvalid}, {ErrUnauthorized, CategoryUnauthorized},
	{context.DeadlineExceeded, CategoryDeadlineExceeded}, {context.Canceled, CategoryCanceled},
}

// Category names err's category: one of the Category* constants
// ("unavailable", "unroutable", ...), "unknown" for an error of no
// category, "" for nil.
func Category(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return CategoryUnknown
}

// Error is a failure with both a category and a native cause. errors.Is
// matches Kind (one of the Err* values above), errors.As reaches the native
// error (e.g. *amqp091.Error, sarama.KError) through Err.
type Error struct {
	// Op is what failed: "<adapter>: <operation>", e.g. "rabbitmq: publish"
	// or "kafka: connect".
	Op string
	// Kind is the category, one of the Err* sentinels.
	Kind error
	// Err is the cause, possibly nil.
	Err error
}

// Error reads like: rabbitmq: publish: broker unavailable: connection reset.
func (e *Error) Error() string {
	s := e.Op
	if s != "" {
		s += ": "
	}
	if e.Kind != nil {
		s += e.Kind.Error()
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns both the category and the cause.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Safe reports whether a publish left the message safe: published (err is
// nil) or dead-lettered where it can be replayed (err matches
// [ErrDeadLettered]). An HTTP handler answers 2xx when it is (202 Accepted
// for a dead-lettered event, which will be delivered after a replay) and
// 503 otherwise: then the event is nowhere but in the caller's hands.
func Safe(err error) bool { return err == nil || errors.Is(err, ErrDeadLettered) }

// IsRetryable reports whether publishing the same message again may succeed:
// true for [ErrUnavailable] (even when it also wraps the context error of an
// attempt that timed out), false for every other category, for [ErrClosed]
// and [ErrDeadLettered] whatever else they wrap, for plain context errors
// and for nil.
func IsRetryable(err error) bool {
	return err != nil && errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrDeadLettered)
}
