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
