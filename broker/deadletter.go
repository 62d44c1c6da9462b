package broker

import (
	"context"
	"time"
)

// DeadLetter is a message that could not be published, unchanged, with why.
type DeadLetter struct {
	// Message is the original message: body, headers, key, name and id as
	// they were given to Publish.
	Message Message
	// Reason is the last error's text.
	Reason string
	// Category is [Category] of the last error ("unavailable",
	// "unroutable", ...).
	Category string
	// Attempts is how many publishes were tried.
	Attempts int
	// FirstFailure and LastFailure bound the failed attempts.
	FirstFailure time.Time
	LastFailure  time.Time
}

// DeadLetterSink stores dead letters durably: Put returns nil only once the
// entry is safe (fsync'd to disk, or confirmed by the broker's dead-letter
// destination). Implementations are safe for concurrent use. The local
// spool is deadletter.Spool; the broker-side ones are
// rabbitmq.NewDeadLetterSink and kafka.NewDeadLetterSink.
type DeadLetterSink interface {
	Put(ctx context.Context, d DeadLetter) error
}
