package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

type created = events.OrderCreated
type cancelled = events.OrderCancelled

// sameName shares order.created's name with a different Go type.
type sameName struct{}

func (sameName) EventName() string { return events.NameOrderCreated }

func TestDispatchOrderAndRouting(t *testing.T) {
	b := eventbus.New()
	var got []string
	eventbus.Subscribe(b, func(_ context.Context, e created) error { got = append(got, "typed1:"+e.OrderID); return nil })
	eventbus.SubscribeAll(b, func(_ context.Context, e eventbus.Event) error { got = append(got, "all:"+e.EventName()); return nil })
	eventbus.Subscribe(b, func(_ context.Context, e created) error { got = append(got, "typed2:"+e.OrderID); return nil })
	eventbus.Subscribe(b, func(_ context.Context, e cancelled) error { got = append(got, "cancel:"+e.OrderID); return nil })

	require.NoError(t, eventbus.Publish(context.Background(), b, created{OrderID: "o1"}))
	require.NoError(t, eventbus.Publish(context.Background(), b, cancelled{OrderID: "o2"}))
	require.NoError(t, eventbus.Publish(context.Background(), b, events.OrderStatusUpdated{OrderID: "o3"}))
	assert.Equal(t, []string{
		"typed1:o1", "all:order.created", "typed2:o1",
		"all:order.cancelled", "cancel:o2",
		"all:order.status.updated",
	}, got)
}

func TestPublishAsInterfaceReachesTypedHandlers(t *testing.T) {
	b := eventbus.New()
	var n atomic.Int32
	eventbus.Subscribe(b, func(_ context.Context, e created) error { n.Add(1); return nil })
	var anyOrder atomic.Int32
	eventbus.Subscribe(b, func(_ context.Context, e events.Event) error { anyOrder.Add(1); return nil })

	var ev events.Event = created{OrderID: "o"}
	require.NoError(t, eventbus.Publish(context.Background(), b, ev))
	require.NoError(t, eventbus.Publish(context.Background(), b, ping{}))
	assert.Equal(t, int32(1), n.Load())
	assert.Equal(t, int32(1), anyOrder.Load(), "interface subscriber gets only events implementing it")
}

// ping is an eventbus.Event but not an events.Event.
type ping struct{}

func (ping) EventName() string { return "ping" }

func TestEveryHandlerRunsAndErrorsAreJoined(t *testing.T) {
	b := eventbus.New()
	errA := errors.New("smtp down")
	ran := 0
	eventbus.Subscribe(b, func(context.Context, created) error { ran++; return errA })
	eventbus.Subscribe(b, func(context.Context, created) error { ran++; panic("boom") })
	eventbus.Subscribe(b, func(context.Context, created) error { ran++; return nil })

	err := eventbus.Publish(context.Background(), b, created{OrderID: "o"})
	require.Error(t, err)
	assert.Equal(t, 3, ran, "every handler runs")
	assert.ErrorIs(t, err, errA)
	assert.ErrorIs(t, err, eventbus.ErrPanic)
	var he *eventbus.HandlerError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, "order.created", he.Event)
	assert.Contains(t, he.Handler, "TestEveryHandlerRunsAndErrorsAreJoined")
	assert.Contains(t, err.Error(), "boom")

	// The bus keeps working after a panic.
	ran = 0
	_ = eventbus.Publish(context.Background(), b, created{OrderID: "o"})
	assert.Equal(t, 3, ran)
}

func TestBadInputIsAnErrorNotAPanic(t *testing.T) {
	b := eventbus.New()
	eventbus.Subscribe[created](b, nil)
	err := eventbus.Publish(context.Background(), b, created{})
	assert.ErrorContains(t, err, "nil handler")

	eventbus.Subscribe(b, func(context.Context, created) error { return nil })
	err = eventbus.Publish(context.Background(), b, sameName{})
	assert.ErrorContains(t, err, "share the name")

	var nilBus *eventbus.Bus
	assert.ErrorIs(t, eventbus.Publish(context.Background(), nilBus, created{}), eventbus.ErrNilBus)
	assert.Nil(t, eventbus.Subscribe(nilBus, func(context.Context, created) error { return nil }))

	var nilEvent events.Event
	assert.ErrorContains(t, eventbus.Publish(context.Background(), b, nilEvent), "EventName panicked")
}

func TestUnsubscribeIsIdempotent(t *testing.T) {
	var b eventbus.Bus // the zero value works
	calls := 0
	s1 := eventbus.Subscribe(&b, func(context.Context, created) error { calls++; return nil })
	s2 := eventbus.SubscribeAll(&b, func(context.Context, eventbus.Event) error { calls += 10; return nil })
	require.NoError(t, eventbus.Publish(context.Background(), &b, created{}))
	assert.Equal(t, 11, calls)

	s1.Unsubscribe()
	s1.Unsubscribe()
	require.NoError(t, eventbus.Publish(context.Background(), &b, created{}))
	assert.Equal(t, 21, calls)
	s2.Unsubscribe()
	require.NoError(t, eventbus.Publish(context.Background(), &b, created{}))
	assert.Equal(t, 21, calls)
	var nilSub *eventbus.Subscription
	nilSub.Unsubscribe()
}

func TestConcurrentPublishAndSubscribe(t *testing.T) {
	b := eventbus.New()
	var stable atomic.Int64
	eventbus.Subscribe(b, func(context.Context, created) error { stable.Add(1); return nil })

	const publishers, perPublisher = 8, 500
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for range perPublisher {
				if err := eventbus.Publish(context.Background(), b, created{OrderID: "o"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 200 {
				s := eventbus.Subscribe(b, func(context.Context, created) error { return nil })
				a := eventbus.SubscribeAll(b, func(context.Context, eventbus.Event) error { return nil })
				s.Unsubscribe()
				a.Unsubscribe()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(publishers*perPublisher), stable.Load(), "the stable subscriber saw every event")
}

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	ev := created{OrderID: "o", UserID: "u", Status: events.StatusCreated, Total: events.Cents(12550)}
	for _, n := range []int{1, 10} {
		var sink atomic.Int64
		h := func(_ context.Context, e created) error { sink.Add(int64(len(e.OrderID))); return nil }

		b.Run(fmt.Sprintf("bus/subscribers=%d", n), func(b *testing.B) {
			bus := eventbus.New()
			for range n {
				eventbus.Subscribe(bus, h)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := eventbus.Publish(ctx, bus, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("direct/subscribers=%d", n), func(b *testing.B) {
			hs := make([]func(context.Context, created) error, n)
			for i := range hs {
				hs[i] = h
			}
			b.ReportAllocs()
			for b.Loop() {
				var errs []error
				for _, h := range hs {
					if err := h(ctx, ev); err != nil {
						errs = append(errs, err)
					}
				}
				if len(errs) > 0 {
					b.Fatal(errors.Join(errs...))
				}
			}
		})
	}
}
