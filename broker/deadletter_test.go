package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/domainevents/domainevents/broker"
)

// Annotated adds the dead-letter headers without touching the message's
// own; the reason header is one line of at most MaxDeadLetterReason bytes
// (an error with a stack in its text would otherwise put kilobytes into
// every dead letter).
func TestAnnotated(t *testing.T) {
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := broker.Message{ID: "id-1", Name: "order.created", Headers: map[string]string{"trace": "t1"}}
	d := broker.DeadLetter{Message: m, Reason: "handler failed: smtp down", Category: broker.CategoryHandlerFailed,
		Attempts: 5, FirstFailure: first, LastFailure: first.Add(time.Minute)}
	got := d.Annotated()
	assert.Equal(t, map[string]string{
		"trace":                             "t1",
		broker.HeaderDeadLetterReason:       "handler failed: smtp down",
		broker.HeaderDeadLetterCategory:     broker.CategoryHandlerFailed,
		broker.HeaderDeadLetterAttempts:     "5",
		broker.HeaderDeadLetterFirstFailure: "2026-01-02T03:04:05Z",
		broker.HeaderDeadLetterLastFailure:  "2026-01-02T03:05:05Z",
	}, got.Headers)
	assert.Equal(t, map[string]string{"trace": "t1"}, m.Headers, "the message's headers are not modified")

	d.Reason = "handler panicked: boom\ngoroutine 7 [running]:\n" + strings.Repeat("main.handler()\n\t/src/main.go:42 +0x1d\n", 200)
	r := d.Annotated().Headers[broker.HeaderDeadLetterReason]
	assert.LessOrEqual(t, len(r), broker.MaxDeadLetterReason)
	assert.NotContains(t, r, "\n")
	assert.True(t, strings.HasPrefix(r, "handler panicked: boom; goroutine 7 [running]:; "), r)
	assert.True(t, strings.HasSuffix(r, "..."))
	assert.Contains(t, d.Reason, "\n", "the dead letter's own Reason is left as it is")
}
