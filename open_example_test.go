package domainevents_test

import (
	"context"
	"fmt"
	"log"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// The front door: one call wires the adapter cfg names, retries, the
// dead-letter spool and queue, and a forwarder for typed events. Attach it
// to the service's bus and every event published there goes to the broker.
// (cfg.Enabled is false here, so the example prints instead of needing
// RabbitMQ or Kafka; in a service cfg comes from broker.ConfigFromEnv().)
func ExampleOpen() {
	ctx := context.Background()
	cfg := broker.DefaultConfig() // in a service: cfg, err := broker.ConfigFromEnv()
	printer := make(announcing, 1)

	pub, err := domainevents.Open(ctx, cfg,
		domainevents.WithDisabledBroker(printer)) // only used while cfg.Enabled is false
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close(ctx) // flushes, then closes every part in order

	bus := eventbus.New()
	pub.Attach(bus)
	err = eventbus.Publish(ctx, bus, events.OrderCancelled{
		OrderID: "6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5", UserID: "0c6b1f3e-9a8d-4e7f-b2a1-3c4d5e6f7a8b",
		OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled})
	if err != nil {
		log.Fatal(err) // the broker did not accept it (and the retry layer gave up)
	}
	fmt.Println(<-printer)
	fmt.Println("healthy:", pub.Health(ctx) == nil)
	// Output:
	// order.cancelled of order 6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5
	// healthy: true
}
