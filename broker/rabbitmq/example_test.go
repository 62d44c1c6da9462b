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

// Look at what a subscriber dead-lettered, then send the messages of one
// event name back to their exchange and routing key.
func ExampleRedrive() {
	ctx := context.Background()
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	dry, err := rabbitmq.Redrive(ctx, cfg, "billing.orders.dlq", broker.RedriveOptions{DryRun: true})
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range dry.Selected {
		log.Printf("%s %s -> %s %s: %s (%s)", d.Message.ID, d.Message.Name, d.To.Name, d.To.RoutingKey, d.Reason, d.Category)
	}
	res, err := rabbitmq.Redrive(ctx, cfg, "billing.orders.dlq", broker.RedriveOptions{Name: "order.created"})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("moved %d of %d (failed: %d)", res.Moved, len(res.Selected), res.Failed())
}

// Publish CloudEvents in binary mode: the headers cloudEvents:id,
// cloudEvents:source, cloudEvents:type, cloudEvents:time... beside the
// usual properties, the envelope unchanged as the data. Setting
// MESSAGE_BROKER_CLOUDEVENTS_SOURCE does the same without the option.
func ExampleWithCloudEvents() {
	ctx := context.Background()
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	b, err := rabbitmq.New(ctx, cfg,
		rabbitmq.WithQueue(rabbitmq.Queue{Name: "billing.orders", Keys: []string{"order.#"}}),
		rabbitmq.WithCloudEvents("/orders-service"))
	if err != nil {
		log.Fatal(err) // a source that is not a URI-reference: broker.ErrInvalid
	}
	defer b.Close(context.Background())
	msg, err := bridge.MessageFor(events.New(events.OrderCancelled{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled,
	}))
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Publish(ctx, msg); err != nil { // cloudEvents:type "order.cancelled"
		log.Fatal(err)
	}
}
