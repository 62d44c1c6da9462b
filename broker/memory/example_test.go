package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker/memory"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// A service's typed handler, fed by the in-memory broker as it would be by
// RabbitMQ or Kafka; the test waits for the event, without sleeping.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := memory.New()
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	bus := eventbus.New() // the consumer's handlers
	eventbus.Subscribe(bus, func(_ context.Context, e events.OrderCancelled) error {
		fmt.Println("cancelled", e.OrderID)
		return nil
	})
	h, err := bridge.NewHandler(bus)
	if err != nil {
		panic(err)
	}
	sub, err := b.Subscribe("billing", h)
	if err != nil {
		panic(err)
	}

	fwd, err := bridge.NewForwarder(b) // the code under test publishes
	if err != nil {
		panic(err)
	}
	if err := fwd.Forward(ctx, events.OrderCancelled{OrderID: "o-1", UserID: "u-1",
		OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled}); err != nil {
		panic(err)
	}
	d, err := sub.WaitName(ctx, events.NameOrderCancelled)
	if err != nil {
		panic(err)
	}
	fmt.Println("acknowledged", d.Name, "attempt", d.Attempt)
	// Output:
	// cancelled o-1
	// acknowledged order.cancelled attempt 1
}
