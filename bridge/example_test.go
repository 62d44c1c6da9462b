package bridge_test

import (
	"context"
	"fmt"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

func ExampleForwarder() {
	// A real service uses rabbitmq.New or kafka.New; the recorder keeps the
	// messages in memory.
	rec := &brokertest.Recorder{}
	fwd, err := bridge.NewForwarder(rec, bridge.WithStamper(events.Stamper{
		NewID: func() string { return "e-1" },
		Now:   func() time.Time { return time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC) },
	}))
	if err != nil {
		panic(err)
	}
	bus := eventbus.New()
	fwd.Attach(bus)

	err = eventbus.Publish(context.Background(), bus, events.OrderStatusUpdated{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress,
	})
	fmt.Println("publish error:", err)
	m := rec.Messages()[0]
	fmt.Println(m.Name, m.ID, m.Key)
	fmt.Println(string(m.Body))
	// Output:
	// publish error: <nil>
	// order.status.updated e-1 o-1
	// {"name":"order.status.updated","id":"e-1","timestamp":"2026-11-30T09:00:00.000Z","data":{"orderId":"o-1","userId":"u-1","oldStatus":"created","newStatus":"in_progress"}}
}

func ExampleNewHandler() {
	// The consuming service's code: typed handlers, nothing broker-specific.
	bus := eventbus.New()
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error {
		env, _ := bridge.EnvelopeFrom(ctx)
		fmt.Println("refund", e.OrderID, "event", env.ID)
		return nil
	})
	handle, err := bridge.NewHandler(bus) // give it to rabbitmq.NewSubscriber or kafka.NewSubscriber
	if err != nil {
		panic(err)
	}

	body := []byte(`{"name":"order.cancelled","id":"e-7","timestamp":"2026-11-30T10:00:00.000Z",
		"data":{"orderId":"o-1","userId":"u-1","oldStatus":"created","newStatus":"cancelled"}}`)
	err = handle(context.Background(), broker.Delivery{Message: broker.Message{ID: "e-7", Name: "order.cancelled", Body: body}})
	fmt.Println(err)
	err = handle(context.Background(), broker.Delivery{Message: broker.Message{ID: "e-8", Body: []byte("garbage")}})
	fmt.Println("dead-letter at once:", broker.Permanent(err))
	// Output:
	// refund o-1 event e-7
	// <nil>
	// dead-letter at once: true
}
