package kafka_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Connect from the MESSAGE_BROKER_* environment (MESSAGE_BROKER_TYPE=kafka)
// and forward every bus event to the orders topic, keyed by order id.
func ExampleNew() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := kafka.New(ctx, cfg, kafka.WithSASL(kafka.SASLSCRAMSHA512))
	if err != nil {
		log.Fatal(err) // e.g. the topic does not exist, or broker.ErrUnauthorized
	}
	defer b.Close(context.Background()) // flushes and waits for acks

	fwd, err := bridge.NewForwarder(b)
	if err != nil {
		log.Fatal(err)
	}
	bus := eventbus.New()
	fwd.Attach(bus)
	err = eventbus.Publish(ctx, bus, events.OrderStatusUpdated{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress,
	})
	if err != nil {
		log.Fatal(err) // acknowledged with acks=all when nil
	}
}

// Consume the orders topic in group "billing": handlers get typed events
// through the bridge; failures are retried, then dead-lettered to
// "orders.events.dlq".
func ExampleNewSubscriber() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	bus := eventbus.New()
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error {
		log.Printf("refund order %s", e.OrderID)
		return nil // nil commits the offset; an error retries the record
	})
	h, err := bridge.NewHandler(bus)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sub, err := kafka.NewSubscriber(ctx, cfg, "billing", h, kafka.WithMaxAttempts(3))
	if err != nil {
		log.Fatal(err)
	}
	stop, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelStop()
	defer sub.Close(stop) // handlers finish (or are abandoned at 10s), offsets committed
}

// Sixteen handlers per partition, one per order at a time: a slow handler
// (a database write) does not cap a partition at one event per write,
// and each order's events still arrive in sequence (Delivery.Seq counts
// them when they were published through the outbox).
func ExampleWithConcurrency() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	h := func(ctx context.Context, d broker.Delivery) error {
		log.Printf("order %s: event %d (%s)", d.Key, d.Seq, d.Name) // never two of one order at once
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sub, err := kafka.NewSubscriber(ctx, cfg, "shipping", h, kafka.WithConcurrency(16))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close(context.Background())
}

// Start while the cluster may be down: New returns at once, Publish waits
// for the connection up to its ctx, and a readiness probe reports Health.
func ExampleWithLazyConnect() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	b, err := kafka.New(context.Background(), cfg, kafka.WithLazyConnect())
	if err != nil {
		log.Fatal(err) // only a bad configuration or option
	}
	defer b.Close(context.Background())
	http.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Health(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
}

// Records Kafka refuses for good go to "orders.events.dlq" through the
// retry layer.
func ExampleNewDeadLetterSink() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	b, err := kafka.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	dlq, err := kafka.NewDeadLetterSink(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer dlq.Close(ctx) // after the retry layer: closes its own producer
	r, err := retry.New(b, retry.WithRejectedDeadLetter(dlq))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close(ctx)
}

// Send the dead letters of "<topic>.dlq" whose handler failed back to
// their topic; a later run does not move them again.
func ExampleRedrive() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	res, err := kafka.Redrive(context.Background(), cfg, cfg.Topic+".dlq", broker.RedriveOptions{Reason: broker.CategoryHandlerFailed})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("moved %d of %d (failed: %d)", res.Moved, len(res.Selected), res.Failed())
}

// Publish CloudEvents in binary mode, as cloudevents/sdk-go's Kafka binding
// reads them: ce_id, ce_source, ce_type, ce_time... beside the usual
// headers, the envelope unchanged as the data. Setting
// MESSAGE_BROKER_CLOUDEVENTS_SOURCE does the same without the option.
func ExampleWithCloudEvents() {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := kafka.New(ctx, cfg, kafka.WithCloudEvents("/orders-service"))
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close(context.Background())
	msg, err := bridge.MessageFor(events.New(events.OrderCancelled{
		OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled,
	}))
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Publish(ctx, msg); err != nil { // ce_type "order.cancelled", record key "o-1"
		log.Fatal(err)
	}
}
