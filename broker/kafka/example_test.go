package kafka_test

import (
	"context"
	"log"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
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
