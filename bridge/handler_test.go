package bridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

func delivery(t *testing.T, e events.Event) broker.Delivery {
	t.Helper()
	env := fixed.Stamp(e)
	m, err := bridge.MessageFor(env)
	require.NoError(t, err)
	return broker.Delivery{Message: m, Attempt: 1, Source: "test"}
}

func TestBusHandlerDispatchesTypedEvents(t *testing.T) {
	bus := eventbus.New()
	var got []string
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error {
		env, ok := bridge.EnvelopeFrom(ctx)
		require.True(t, ok)
		got = append(got, "cancelled "+e.OrderID+" "+env.ID)
		return nil
	})
	eventbus.Subscribe(bus, func(_ context.Context, e events.OrderCreated) error {
		got = append(got, "created "+e.Total.String())
		return nil
	})
	h, err := bridge.NewHandler(bus)
	require.NoError(t, err)
	require.NoError(t, h(context.Background(), delivery(t, events.OrderCancelled{OrderID: "o-1", UserID: "u", OldStatus: "created", NewStatus: "cancelled"})))
	require.NoError(t, h(context.Background(), delivery(t, events.OrderCreated{OrderID: "o-2", UserID: "u", Status: "created", Total: events.Cents(12550)})))
	assert.Equal(t, []string{"cancelled o-1 " + fixed.NewID(), "created 125.50"}, got)
}

func TestBusHandlerPoisonIsPermanent(t *testing.T) {
	h, err := bridge.NewHandler(eventbus.New())
	require.NoError(t, err)
	for _, body := range []string{"not json", `{"name":"order.shipped","id":"x","timestamp":"2026-01-01T00:00:00Z","data":{}}`,
		`{"name":"order.cancelled","id":"x","timestamp":"2026-01-01T00:00:00Z","data":{"orderId":"o","userId":"u","oldStatus":"created","newStatus":"created"}}`} {
		err = h(context.Background(), broker.Delivery{Message: broker.Message{ID: "x", Name: "order.created", Body: []byte(body)}, Source: "queue q"})
		require.Error(t, err, body)
		assert.True(t, broker.Permanent(err), "undecodable bodies go to the dead letter at once: %v", err)
	}
}

func TestBusHandlerErrorsAreRetryableAndDedupSkips(t *testing.T) {
	bus := eventbus.New()
	calls := 0
	fail := true
	eventbus.Subscribe(bus, func(context.Context, events.OrderCancelled) error {
		calls++
		if fail {
			return errors.New("db down")
		}
		return nil
	})
	dedup := bridge.NewDedup(10, time.Minute)
	h, err := bridge.NewHandler(bus, bridge.WithDedup(dedup))
	require.NoError(t, err)
	d := delivery(t, events.OrderCancelled{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "cancelled"})
	err = h(context.Background(), d)
	require.Error(t, err)
	assert.False(t, broker.Permanent(err), "a handler failure is retried")
	fail = false
	require.NoError(t, h(context.Background(), d))
	require.NoError(t, h(context.Background(), d), "the redelivery is skipped")
	assert.Equal(t, 2, calls)
	assert.Equal(t, int64(1), dedup.Skipped())
}

func TestDedupBoundedAndExpiring(t *testing.T) {
	d := bridge.NewDedup(2, time.Minute)
	d.Mark("a")
	d.Mark("b")
	d.Mark("c")
	assert.False(t, d.Seen("a"), "evicted beyond the size")
	assert.True(t, d.Seen("b"))
	assert.True(t, d.Seen("c"))

	short := bridge.NewDedup(10, time.Nanosecond)
	short.Mark("x")
	time.Sleep(time.Millisecond) // longer than the ttl
	assert.False(t, short.Seen("x"), "forgotten after the ttl")
}

// A CloudEvent from another producer carries the event's data alone: the
// handler makes the envelope from the attributes the subscriber read.
func TestBusHandlerDecodesAnotherProducersCloudEvent(t *testing.T) {
	bus := eventbus.New()
	var got events.OrderCancelled
	var env events.Envelope
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error {
		got, env = e, must(bridge.EnvelopeFrom(ctx))
		return nil
	})
	h, err := bridge.NewHandler(bus)
	require.NoError(t, err)
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	data := `{"orderId":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","userId":"1b7e3c55-8a0f-4d1e-b2c4-5f6a7b8c9d0e","oldStatus":"created","newStatus":"cancelled"}`
	d := broker.Delivery{Message: broker.Message{ID: "ce-1", Name: events.NameOrderCancelled, Time: at, ContentType: "application/json",
		Body: []byte(data), Headers: map[string]string{"ce_specversion": "1.0", "ce_source": "/orders"}}}
	require.NoError(t, h(context.Background(), d))
	assert.Equal(t, "6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33", got.OrderID)
	assert.Equal(t, events.StatusCancelled, got.NewStatus)
	assert.Equal(t, "ce-1", env.ID)
	assert.True(t, at.Equal(env.Timestamp))

	// Not a CloudEvent: the bare data is poison, as before.
	delete(d.Headers, "ce_specversion")
	assert.ErrorIs(t, h(context.Background(), d), broker.ErrInvalid)
	// A CloudEvent whose data is not JSON is poison too.
	d.Headers["ce_specversion"] = "1.0"
	d.ContentType, d.Body = "text/plain", []byte("cancelled")
	assert.ErrorIs(t, h(context.Background(), d), broker.ErrInvalid)
}

func must[T any](v T, ok bool) T {
	if !ok {
		panic("not found")
	}
	return v
}
