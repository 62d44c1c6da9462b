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

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout); err != nil {
		log.Error("orders example failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out io.Writer) (err error) {
	// The wiring a service does: configuration, one Open, a bus.
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.Queue == "" {
		cfg.Queue = "orders.events.all" // so that examples/consumer finds the events on RabbitMQ
	}
	pub, err := domainevents.Open(ctx, cfg, domainevents.WithLogger(log), domainevents.WithDisabledBroker(printing{out}))
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // the shutdown budget
		defer cancel()
		err = errors.Join(err, pub.Close(ctx))
	}()
	bus := eventbus.New()
	pub.Attach(bus)

	// The service's own code: publish on the bus.
	orderID, userID := uuid.NewString(), uuid.NewString()
	steps := []events.Event{
		events.OrderCreated{
			OrderID: orderID, UserID: userID, Status: events.StatusCreated,
			Items: []events.OrderItem{
				{ProductID: "sku-1001", Quantity: 2, Price: events.Cents(500000)},
				{ProductID: "sku-2002", Quantity: 1, Price: events.Cents(255000)},
			},
			Total: events.Cents(1255000),
		},
		events.OrderStatusUpdated{OrderID: orderID, UserID: userID, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress},
		events.OrderCancelled{OrderID: orderID, UserID: userID, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled},
	}
	for _, e := range steps {
		err := eventbus.Publish(ctx, bus, e)
		switch {
		case err == nil:
			log.Info("event published", "name", e.EventName(), "order", orderID)
		case broker.Safe(err): // dead-lettered: safe, replayed once the broker is back
			log.Warn("event spooled, not yet published", "name", e.EventName(), "order", orderID, "err", err)
		default:
			return fmt.Errorf("publish %s: %w", e.EventName(), err)
		}
	}
	log.Info("done", "status", pub.Status(ctx))
	return nil
}

// printing is the broker used when MESSAGE_BROKER_ENABLED is false: it
// prints each body as one JSON line.
type printing struct{ out io.Writer }

func (p printing) Publish(ctx context.Context, m broker.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(p.out, "%s\n", m.Body)
	return err
}

func (printing) Close(context.Context) error { return nil }
