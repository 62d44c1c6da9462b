package broker

import (
	"context"
	"errors"
)

// Error categories. Every error an adapter returns from Publish or Close
// matches at most one of them with errors.Is, except context errors, which
// pass through unwrapped (errors.Is(err, context.DeadlineExceeded) works).
var (
	// ErrClosed: the broker was closed; nothing more is accepted.
	ErrClosed = errors.New("broker closed")
	// ErrUnavailable: the broker cannot be reached or is not ready (connection
	// lost, leader election, not enough replicas). The only retryable category.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrUnroutable: the broker is up but had nowhere to put the message
	// (RabbitMQ: no queue bound for the routing key; Kafka: unknown topic).
	ErrUnroutable = errors.New("message unroutable")
	// ErrRejected: the broker refused a message it received (RabbitMQ nack,
	// e.g. a full queue with overflow=reject-publish).
	ErrRejected = errors.New("message rejected by broker")
	// ErrTooLarge: the message exceeds the broker's size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrInvalid: the message or configuration is malformed (empty name,
	// bad config value); retrying cannot help.
	ErrInvalid = errors.New("invalid message or configuration")
	// ErrUnauthorized: bad credentials, or no permission for the vhost,
	// exchange or topic.
	ErrUnauthorized = errors.New("not authorized")
	// ErrDeadLettered: the message was not published, but it is safe in a
	// dead-letter sink (local spool or broker dead-letter queue) from which
	// it can be replayed. Not retryable: retrying would duplicate it.
	ErrDeadLettered = errors.New("dead-lettered")
)

// categories names each category for logs, headers and spool entries.
var categories = []struct {
	err  error
	name string
}{
	{ErrDeadLettered, "dead_lettered"}, {ErrClosed, "closed"}, {ErrUnavailable, "unavailable"},
	{ErrUnroutable, "unroutable"}, {ErrRejected, "rejected"}, {ErrTooLarge, "too_large"},
	{ErrInvalid, "invalid"}, {ErrUnauthorized, "unauthorized"},
	{context.DeadlineExceeded, "deadline_exceeded"}, {context.Canceled, "canceled"},
}

// Category names err's category: "unavailable", "unroutable", "rejected",
// "too_large", "invalid", "unauthorized", "closed", "dead_lettered",
// "deadline_exceeded", "canceled", or "unknown" ("" for nil).
func Category(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "unknown"
}

// Error is a failure with both a category and a native cause. errors.Is
// matches Kind (one of the Err* values above), errors.As reaches the native
// error (e.g. *amqp091.Error, sarama.KError) through Err.
type Error struct {
	// Op is what failed, e.g. "rabbitmq: publish" or "kafka: connect".
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

// NewError returns an *Error, except that a context error with no kind is
// returned as it is (callers test it with errors.Is). Adapters use it to
// classify native errors.
func NewError(op string, kind, cause error) error {
	if cause != nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) && kind == nil {
		return cause
	}
	return &Error{Op: op, Kind: kind, Err: cause}
}

// IsRetryable reports whether publishing the same message again may succeed:
// true for [ErrUnavailable] (even when it also wraps the context error of an
// attempt that timed out), false for every other category, for [ErrClosed]
// and [ErrDeadLettered] whatever else they wrap, for plain context errors
// and for nil.
func IsRetryable(err error) bool {
	return err != nil && errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrDeadLettered)
}
