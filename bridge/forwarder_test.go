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
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

var fixed = events.Stamper{
	NewID: func() string { return "11111111-2222-4333-8444-555555555555" },
	Now:   func() time.Time { return time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC) },
}

func TestForwarderPublishesTheWireBody(t *testing.T) {
	rec := &brokertest.Recorder{}
	f, err := bridge.NewForwarder(rec, bridge.WithStamper(fixed))
	require.NoError(t, err)
	bus := eventbus.New()
	f.Attach(bus)

	require.NoError(t, eventbus.Publish(context.Background(), bus, events.OrderStatusUpdated{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress,
	}))
	msgs := rec.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, "11111111-2222-4333-8444-555555555555", m.ID)
	assert.Equal(t, "order.status.updated", m.Name)
	assert.Equal(t, "o-1", m.Key)
	assert.Equal(t, "application/json", m.ContentType)
	assert.Equal(t, fixed.Now(), m.Time)
	assert.JSONEq(t, `{"name":"order.status.updated","id":"11111111-2222-4333-8444-555555555555","timestamp":"2026-11-30T10:00:00.000Z",
		"data":{"orderId":"o-1","userId":"u-1","oldStatus":"created","newStatus":"in_progress"}}`, string(m.Body))
}

func TestForwarderSurfacesErrors(t *testing.T) {
	down := &broker.Error{Op: "test", Kind: broker.ErrUnavailable}
	rec := &brokertest.Recorder{Fail: func(broker.Message) error { return down }}
	f, err := bridge.NewForwarder(rec)
	require.NoError(t, err)
	bus := eventbus.New()
	sub := f.Attach(bus)

	err = eventbus.Publish(context.Background(), bus, events.OrderCancelled{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "cancelled"})
	require.Error(t, err, "a broker failure must reach the publisher")
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.True(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), "order.cancelled")

	// An invalid event never reaches the broker.
	rec.Fail = nil
	err = eventbus.Publish(context.Background(), bus, events.OrderCancelled{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "created"})
	assert.ErrorIs(t, err, events.ErrInvalid)
	assert.Empty(t, rec.Messages())

	// Events that are not events.Event are refused, not dropped.
	err = eventbus.Publish(context.Background(), bus, notDomain{})
	assert.ErrorIs(t, err, broker.ErrInvalid)

	sub.Unsubscribe()
	require.NoError(t, eventbus.Publish(context.Background(), bus, events.OrderCancelled{}))
	assert.Empty(t, rec.Messages())
}

type notDomain struct{}

func (notDomain) EventName() string { return "ping" }

func TestNewForwarderNilBroker(t *testing.T) {
	_, err := bridge.NewForwarder(nil)
	assert.True(t, errors.Is(err, broker.ErrInvalid))
}

type traceKey struct{}

// The hook runs with the caller's ctx before the event is published or
// queued: what it writes into the headers reaches the broker, also from an
// asynchronous worker whose ctx is not the caller's.
func TestForwarderMessageHook(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []bridge.Option
	}{
		{"synchronous", nil},
		{"asynchronous", []bridge.Option{bridge.WithAsync(2, 8)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &brokertest.Recorder{}
			hook := func(ctx context.Context, m *broker.Message) {
				if v, ok := ctx.Value(traceKey{}).(string); ok {
					if m.Headers == nil {
						m.Headers = map[string]string{}
					}
					m.Headers["traceparent"] = v
				}
			}
			f, err := bridge.NewForwarder(rec, append(tc.opts, bridge.WithMessageHook(hook))...)
			require.NoError(t, err)
			ctx := context.WithValue(context.Background(), traceKey{}, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			require.NoError(t, f.Forward(ctx, events.OrderStatusUpdated{OrderID: "o-1", UserID: "u-1",
				OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress}))
			require.NoError(t, f.Close(context.Background()))
			msgs := rec.Messages()
			require.Len(t, msgs, 1)
			assert.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", msgs[0].Headers["traceparent"])
		})
	}
	_, err := bridge.NewForwarder(&brokertest.Recorder{}, bridge.WithMessageHook(nil))
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WithMessageHook: fn is nil")
}
