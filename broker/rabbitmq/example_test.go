package rabbitmq_test

import (
	"context"
	"log"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Connect from the MESSAGE_BROKER_* environment, make sure events have a
// queue to land in, and forward every bus event to RabbitMQ.
func ExampleNew() {
	ctx := context.Background()
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	b, err := rabbitmq.New(ctx, cfg,
		rabbitmq.WithQueue(rabbitmq.Queue{Name: "billing.orders", Keys: []string{"order.#"}}),
		rabbitmq.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err) // e.g. broker.ErrUnauthorized: check MESSAGE_BROKER_USERNAME/PASSWORD
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx) // waits for outstanding confirms
	}()

	fwd, err := bridge.NewForwarder(b)
	if err != nil {
		log.Fatal(err)
	}
	bus := eventbus.New()
	fwd.Attach(bus)
	err = eventbus.Publish(ctx, bus, events.OrderCancelled{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled,
	})
	if err != nil {
		log.Fatal(err) // confirmed by RabbitMQ when nil
	}
}
