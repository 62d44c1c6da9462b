package deadletter

import (
	"context"
	"maps"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// Entry is a message that could not be published, unchanged, with why.
type Entry struct {
	// Message is the original message: body, headers, key, name and id as
	// they were given to Publish.
	Message broker.Message
	// Reason is the last error's text.
	Reason string
	// Category is broker.Category of the last error ("unavailable",
	// "unroutable", ...).
	Category string
	// Attempts is how many publishes were tried.
	Attempts int
	// FirstFailure and LastFailure bound the failed attempts.
	FirstFailure time.Time
	LastFailure  time.Time
}

// Sink stores entries durably. Put returns nil only once the entry is safe
// (fsync'd to disk, or confirmed by the broker's dead-letter destination).
// Implementations are safe for concurrent use.
type Sink interface {
	Put(ctx context.Context, e Entry) error
}

// Header names carrying the reason on broker-side dead-letter destinations.
const (
	HeaderReason       = "dead-letter-reason"
	HeaderCategory     = "dead-letter-category"
	HeaderAttempts     = "dead-letter-attempts"
	HeaderFirstFailure = "dead-letter-first-failure"
	HeaderLastFailure  = "dead-letter-last-failure"
)

// WithReason returns e.Message with the dead-letter headers added; body,
// id, name, key and content type are unchanged. Broker-side sinks publish
// it.
func (e Entry) WithReason() broker.Message {
	m := e.Message
	h := make(map[string]string, len(m.Headers)+5)
	maps.Copy(h, m.Headers)
	h[HeaderReason] = e.Reason
	h[HeaderCategory] = e.Category
	h[HeaderAttempts] = strconv.Itoa(e.Attempts)
	if !e.FirstFailure.IsZero() {
		h[HeaderFirstFailure] = e.FirstFailure.UTC().Format(time.RFC3339Nano)
	}
	if !e.LastFailure.IsZero() {
		h[HeaderLastFailure] = e.LastFailure.UTC().Format(time.RFC3339Nano)
	}
	m.Headers = h
	return m
}
