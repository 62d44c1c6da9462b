package broker_test

import (
	"context"
	"errors"
	"fmt"
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

// NewDeadLetter takes its reason and category from the error, and a zero
// first failure as the last; RefusedForGood tells a refusal from a broker
// that is away, closing, or a caller that gave up.
func TestNewDeadLetterAndRefusedForGood(t *testing.T) {
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := &broker.Error{Op: "publish", Kind: broker.ErrUnroutable, Err: errors.New("no route")}
	d := broker.NewDeadLetter(broker.Message{ID: "id-1"}, err, 3, time.Time{}, last)
	assert.Equal(t, err.Error(), d.Reason)
	assert.Equal(t, broker.Category(err), d.Category)
	assert.Equal(t, 3, d.Attempts)
	assert.Equal(t, last, d.FirstFailure)
	assert.Equal(t, last, d.LastFailure)

	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{err, true},
		{&broker.Error{Op: "publish", Kind: broker.ErrTooLarge}, true},
		{&broker.Error{Op: "publish", Kind: broker.ErrUnavailable}, false},
		{&broker.Error{Op: "publish", Kind: broker.ErrClosed}, false},
		{context.Canceled, false},
		{fmt.Errorf("publish: %w", context.DeadlineExceeded), false},
	} {
		assert.Equal(t, c.want, broker.RefusedForGood(c.err), "RefusedForGood(%v)", c.err)
	}
}
