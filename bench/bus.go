package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// The in-process suite: one subscriber that counts, reached through our
// eventbus, Watermill's gochannel (publish blocks until the subscriber
// acked) and a direct function call.
func busContenders() []contender {
	ev := events.OrderCreated{OrderID: "0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e", UserID: "a3d9c1f0", Status: events.StatusCreated, Total: events.Cents(1255000)}
	counted := func(n *atomic.Int64) func(int64) string {
		return func(confirmed int64) string {
			if got := n.Load(); got != confirmed {
				return fmt.Sprintf("no: handled %d, published %d", got, confirmed)
			}
			return "yes"
		}
	}
	return []contender{
		{name: "domainevents-eventbus", setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			var n atomic.Int64
			bus := eventbus.New()
			eventbus.Subscribe(bus, func(_ context.Context, e events.OrderCreated) error { n.Add(1); return nil })
			return func(ctx context.Context) error { return eventbus.Publish(ctx, bus, ev) }, counted(&n), func() {}, nil
		}},
		{name: "watermill-gochannel", setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			var n atomic.Int64
			ps := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
			msgs, err := ps.Subscribe(context.Background(), "orders")
			if err != nil {
				return nil, nil, nil, err
			}
			go func() {
				for m := range msgs {
					n.Add(1)
					m.Ack()
				}
			}()
			return func(context.Context) error {
				return ps.Publish("orders", message.NewMessage(watermill.NewUUID(), body))
			}, counted(&n), func() { _ = ps.Close() }, nil
		}},
		{name: "direct-call", setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			var n atomic.Int64
			handler := func(_ context.Context, e events.OrderCreated) error { n.Add(1); return nil }
			return func(ctx context.Context) error { return handler(ctx, ev) }, counted(&n), func() {}, nil
		}},
	}
}
