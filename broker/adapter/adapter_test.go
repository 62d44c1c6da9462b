package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/eventbus"
)

// records is a slog.Handler keeping every record.
type records struct {
	mu  sync.Mutex
	all []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) get() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.all...)
}

func attrs(rec slog.Record) map[string]string {
	m := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

var delivery = broker.Delivery{Message: broker.Message{ID: "id-1", Name: "order.created"}, Source: "queue q", Attempt: 2}

func explode(context.Context, broker.Delivery) error { panic("boom\nsecond line") }

// A panic becomes a one-line error naming the value and the frame; its
// stack is logged once, at Error, with the delivery.
func TestCallHandlerPanic(t *testing.T) {
	var logged records
	err := adapter.CallHandler(context.Background(), slog.New(&logged), explode, delivery)
	require.ErrorIs(t, err, adapter.ErrPanic)
	assert.False(t, broker.Permanent(err), "retried like any failure")
	assert.NotContains(t, err.Error(), "\n")
	assert.True(t, strings.HasPrefix(err.Error(), "handler panicked: boom; second line at "), err.Error())
	assert.Contains(t, err.Error(), "adapter_test.explode (adapter_test.go:")
	assert.NotContains(t, err.Error(), "goroutine ")

	recs := logged.get()
	require.Len(t, recs, 1)
	assert.Equal(t, slog.LevelError, recs[0].Level)
	a := attrs(recs[0])
	assert.Contains(t, a["stack"], "goroutine ")
	assert.Contains(t, a["stack"], "adapter_test.explode")
	assert.Equal(t, err.Error(), a["panic"])
	assert.Equal(t, "id-1", a["id"])
	assert.Equal(t, "queue q", a["source"])
	assert.Equal(t, "2", a["attempt"])
}

// A typed handler's panic, recovered by the bus behind the broker handler,
// comes back as an error: its stack is logged once here, and the error's
// text stays one line.
func TestCallHandlerLogsAStackRecoveredBelow(t *testing.T) {
	var bus eventbus.Bus
	eventbus.Subscribe(&bus, func(context.Context, testEvent) error { panic("typed handler bug") })
	h := func(ctx context.Context, d broker.Delivery) error {
		if err := eventbus.Publish(ctx, &bus, testEvent{}); err != nil {
			return fmt.Errorf("event %s: %w", d.ID, err)
		}
		return nil
	}
	var logged records
	err := adapter.CallHandler(context.Background(), slog.New(&logged), h, delivery)
	require.ErrorIs(t, err, eventbus.ErrPanic)
	assert.NotContains(t, err.Error(), "\n")
	assert.Contains(t, err.Error(), "typed handler bug at ")
	recs := logged.get()
	require.Len(t, recs, 1)
	assert.Contains(t, attrs(recs[0])["stack"], "goroutine ")
}

type testEvent struct{}

func (testEvent) EventName() string { return "test.event" }

// A handler's ordinary error is returned as it is, and not logged here.
func TestCallHandlerError(t *testing.T) {
	var logged records
	want := errors.New("downstream not ready")
	err := adapter.CallHandler(context.Background(), slog.New(&logged), func(context.Context, broker.Delivery) error { return want }, delivery)
	assert.Equal(t, want, err)
	assert.Empty(t, logged.get())
}

// The dead letter of a delivery whose handler panicked carries the one-line
// reason; its header is bounded whatever the error's text.
func TestDeadLetterOfPanic(t *testing.T) {
	err := adapter.CallHandler(context.Background(), slog.New(&records{}), explode, delivery)
	dl := adapter.DeadLetterOf(delivery, err, 5, delivery.Time, delivery.Time)
	assert.Equal(t, broker.CategoryHandlerFailed, dl.Category)
	assert.Equal(t, err.Error(), dl.Annotated().Headers[broker.HeaderDeadLetterReason])
}
