package eventbus_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

func Example() {
	bus := eventbus.New()

	// A typed handler: only order.cancelled events, as events.OrderCancelled.
	eventbus.Subscribe(bus, func(_ context.Context, e events.OrderCancelled) error {
		fmt.Println("refund order", e.OrderID)
		return nil
	})
	// A catch-all handler, as the broker forwarder uses.
	eventbus.SubscribeAll(bus, func(_ context.Context, e eventbus.Event) error {
		fmt.Println("saw", e.EventName())
		return nil
	})

	err := eventbus.Publish(context.Background(), bus, events.OrderCancelled{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled,
	})
	fmt.Println("err:", err)
	// Output:
	// refund order o-1
	// saw order.cancelled
	// err: <nil>
}

func ExamplePublish_errors() {
	bus := eventbus.New()
	eventbus.Subscribe(bus, func(context.Context, events.OrderCreated) error {
		return fmt.Errorf("inventory service down")
	})
	eventbus.Subscribe(bus, func(context.Context, events.OrderCreated) error {
		panic("nil map")
	})
	eventbus.Subscribe(bus, func(context.Context, events.OrderCreated) error {
		fmt.Println("third handler still runs")
		return nil
	})
	err := eventbus.Publish(context.Background(), bus, events.OrderCreated{OrderID: "o-1"})
	fmt.Println(errors.Is(err, eventbus.ErrPanic))
	// Output:
	// third handler still runs
	// true
}
