package deadletter

import (
	"maps"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// Header names carrying the reason on broker-side dead-letter destinations.
const (
	HeaderReason       = "dead-letter-reason"
	HeaderCategory     = "dead-letter-category"
	HeaderAttempts     = "dead-letter-attempts"
	HeaderFirstFailure = "dead-letter-first-failure"
	HeaderLastFailure  = "dead-letter-last-failure"
)

// WithReason returns d.Message with the dead-letter headers added; body, id,
// name, key and content type are unchanged. Broker-side sinks publish it.
func WithReason(d broker.DeadLetter) broker.Message {
	m := d.Message
	h := make(map[string]string, len(m.Headers)+5)
	maps.Copy(h, m.Headers)
	h[HeaderReason] = d.Reason
	h[HeaderCategory] = d.Category
	h[HeaderAttempts] = strconv.Itoa(d.Attempts)
	if !d.FirstFailure.IsZero() {
		h[HeaderFirstFailure] = d.FirstFailure.UTC().Format(time.RFC3339Nano)
	}
	if !d.LastFailure.IsZero() {
		h[HeaderLastFailure] = d.LastFailure.UTC().Format(time.RFC3339Nano)
	}
	m.Headers = h
	return m
}
