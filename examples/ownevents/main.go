// Command ownevents shows a service that publishes and consumes its own
// domain events, not the order events this module ships: payment.captured
// and shipment.dispatched, defined below. It needs a broker
// (MESSAGE_BROKER_ENABLED=true; RabbitMQ by default, Kafka with
// MESSAGE_BROKER_TYPE=kafka): it subscribes, publishes one event of each
// type through the bus and the forwarder, and prints each as the typed
// value its bus handler received.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// PaymentCaptured is published when a payment is captured
// ("payment.captured"). Its aggregate is the order it pays for, so that on
// Kafka it shares the order's partition and keeps its order.
type PaymentCaptured struct {
	PaymentID string       `json:"paymentId"`
	OrderID   string       `json:"orderId"`
	Amount    events.Money `json:"amount"`
}

// EventName returns "payment.captured": the stable wire name, never derived
// from the Go type.
func (PaymentCaptured) EventName() string { return "payment.captured" }

// AggregateID returns the order id.
func (e PaymentCaptured) AggregateID() string { return e.OrderID }

// Validate reports the first missing field.
func (e PaymentCaptured) Validate() error {
	switch {
	case e.PaymentID == "":
		return &events.ValidationError{Field: "paymentId", Problem: "required"}
	case e.OrderID == "":
		return &events.ValidationError{Field: "orderId", Problem: "required"}
	case e.Amount.MinorUnits() <= 0:
		return &events.ValidationError{Field: "amount", Value: e.Amount.String(), Problem: "must be positive"}
	}
	return nil
}

// ShipmentDispatched is published when a shipment leaves the warehouse
// ("shipment.dispatched").
type ShipmentDispatched struct {
	ShipmentID string `json:"shipmentId"`
	OrderID    string `json:"orderId"`
	Carrier    string `json:"carrier"`
}

// EventName returns "shipment.dispatched".
func (ShipmentDispatched) EventName() string { return "shipment.dispatched" }

// AggregateID returns the order id.
func (e ShipmentDispatched) AggregateID() string { return e.OrderID }

// Validate reports the first missing field.
func (e ShipmentDispatched) Validate() error {
	if e.ShipmentID == "" {
		return &events.ValidationError{Field: "shipmentId", Problem: "required"}
	}
	if e.OrderID == "" {
		return &events.ValidationError{Field: "orderId", Problem: "required"}
	}
	return nil
}

// Registry knows this service's events, and only them: a body with any
// other name is poison to its consumers (dead-lettered at once).
func Registry() *events.Registry {
	reg := &events.Registry{} // the zero Registry knows no event
	if err := events.Register[PaymentCaptured](reg); err != nil {
		panic(err) // two distinct constant names: cannot fail
	}
	if err := events.Register[ShipmentDispatched](reg); err != nil {
		panic(err)
	}
	return reg
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout); err != nil {
		log.Error("ownevents example failed", "err", err)
		os.Exit(1)
	}
}

// queueName is where the example consumes on RabbitMQ (EXAMPLE_QUEUE,
// default payments.example).
func queueName() string {
	if q := os.Getenv("EXAMPLE_QUEUE"); q != "" {
		return q
	}
	return "payments.example"
}

func run(ctx context.Context, log *slog.Logger, out io.Writer) (err error) {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if !cfg.Enabled {
		return errors.New("MESSAGE_BROKER_ENABLED is false: this example needs a broker to publish to and consume from")
	}

	// Consuming: typed handlers on a bus, fed by a subscriber through a
	// handler that decodes with this service's registry.
	received := make(chan string, 2)
	in := eventbus.New()
	eventbus.Subscribe(in, func(_ context.Context, e PaymentCaptured) error {
		received <- fmt.Sprintf("payment.captured     order=%s payment=%s amount=%s", e.OrderID, e.PaymentID, e.Amount)
		return nil
	})
	eventbus.Subscribe(in, func(_ context.Context, e ShipmentDispatched) error {
		received <- fmt.Sprintf("shipment.dispatched  order=%s shipment=%s carrier=%s", e.OrderID, e.ShipmentID, e.Carrier)
		return nil
	})
	handler, err := bridge.NewHandler(in, bridge.WithRegistry(Registry()))
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pub, sub, err := connect(cctx, cfg, handler, log)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, sub.Close(ctx), pub.Close(ctx))
	}()

	// Publishing: the same bus and forwarder as for the order events.
	fwd, err := bridge.NewForwarder(pub)
	if err != nil {
		return err
	}
	outBus := eventbus.New()
	fwd.Attach(outBus)
	orderID := uuid.NewString()
	for _, e := range []events.Event{
		PaymentCaptured{PaymentID: "pay-" + orderID[:8], OrderID: orderID, Amount: events.Cents(12550)},
		ShipmentDispatched{ShipmentID: "shp-" + orderID[:8], OrderID: orderID, Carrier: "DHL"},
	} {
		if err := eventbus.Publish(ctx, outBus, e); err != nil {
			return fmt.Errorf("publish %s: %w", e.EventName(), err)
		}
	}
	for range 2 {
		select {
		case line := <-received:
			if _, err := fmt.Fprintln(out, line); err != nil {
				return err
			}
		case <-cctx.Done():
			return fmt.Errorf("waiting for the events to come back: %w", cctx.Err())
		}
	}
	return nil
}

// connect opens a publisher and a subscriber for the configured broker.
// The subscriber only takes this service's events: on RabbitMQ its queue
// binds payment.# and shipment.#; on Kafka it reads a topic of their own
// (EXAMPLE_TOPIC, default payments.events), since a consumer dead-letters
// every event its registry does not know.
func connect(ctx context.Context, cfg broker.Config, h broker.Handler, log *slog.Logger) (broker.Broker, broker.Subscriber, error) {
	switch cfg.Type {
	case broker.RabbitMQ:
		q := rabbitmq.Queue{Name: queueName(), Keys: []string{"payment.#", "shipment.#"}}
		sub, err := rabbitmq.NewSubscriber(ctx, cfg, q, h, rabbitmq.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		b, err := rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(log))
		if err != nil {
			_ = sub.Close(context.Background())
			return nil, nil, err
		}
		return b, sub, nil
	case broker.Kafka:
		cfg.Topic = topicName()
		b, err := kafka.New(ctx, cfg, kafka.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		sub, err := kafka.NewSubscriber(ctx, cfg, "ownevents-example", h, kafka.WithLogger(log))
		if err != nil {
			_ = b.Close(context.Background())
			return nil, nil, err
		}
		return b, sub, nil
	}
	return nil, nil, fmt.Errorf("MESSAGE_BROKER_TYPE=%s: unknown broker type", cfg.Type)
}

// topicName is the Kafka topic of this service's events (EXAMPLE_TOPIC,
// default payments.events); it must exist or be auto-created.
func topicName() string {
	if t := os.Getenv("EXAMPLE_TOPIC"); t != "" {
		return t
	}
	return "payments.events"
}
