package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/noop"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/broker/retry"
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
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	b, where, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	if cfg.Enabled {
		// What the broker cannot take after retries lands in a local spool:
		// list and replay it with examples/deadletters.
		spool, err := deadletter.OpenSpool(spoolDir())
		if err != nil {
			return err
		}
		defer spool.Close()
		if b, err = retry.New(b, retry.WithDeadLetter(spool), retry.WithLogger(log)); err != nil {
			return err
		}
		where += "; failures spooled to " + spool.Dir()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, b.Close(ctx))
	}()
	log.Info("broker ready", "config", cfg, "destination", where)

	fwd, err := bridge.NewForwarder(printing{b, out})
	if err != nil {
		return err
	}
	bus := eventbus.New()
	fwd.Attach(bus)

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
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := eventbus.Publish(pctx, bus, e)
		cancel()
		if err != nil {
			return fmt.Errorf("publish %s: %w", e.EventName(), err)
		}
	}
	log.Info("published 3 events", "order", orderID, "destination", where)
	return nil
}

// spoolDir is the dead-letter spool, shared with examples/deadletters.
func spoolDir() string {
	if d := os.Getenv("DEADLETTER_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "domainevents-spool")
}

// exampleQueue is where the example's events land on RabbitMQ: a durable
// queue bound to the exchange for every order event (EXAMPLE_QUEUE, default
// orders.events.all; examples/consumer reads it). Without a bound queue
// RabbitMQ would have nowhere to put them and Publish would fail with
// broker.ErrUnroutable.
func exampleQueue() string {
	if q := os.Getenv("EXAMPLE_QUEUE"); q != "" {
		return q
	}
	return "orders.events.all"
}

// connect picks the adapter the configuration names.
func connect(ctx context.Context, cfg broker.Config, log *slog.Logger) (broker.Broker, string, error) {
	if !cfg.Enabled {
		log.Info("MESSAGE_BROKER_ENABLED is false: using the noop broker (events are printed, not sent)")
		return noop.New(), "nowhere (noop)", nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	switch cfg.Type {
	case broker.RabbitMQ:
		b, err := rabbitmq.New(cctx, cfg, rabbitmq.WithLogger(log),
			rabbitmq.WithQueue(rabbitmq.Queue{Name: exampleQueue(), Keys: []string{"order.#"}}))
		if err != nil {
			return nil, "", err
		}
		return b, fmt.Sprintf("RabbitMQ exchange %q -> queue %q (vhost %q)", cfg.Exchange, exampleQueue(), cfg.VHost), nil
	case broker.Kafka:
		b, err := kafka.New(cctx, cfg, kafka.WithLogger(log))
		if err != nil {
			return nil, "", err
		}
		return b, fmt.Sprintf("Kafka topic %q at %v, keyed by order id", cfg.Topic, cfg.Addrs()), nil
	default:
		return nil, "", fmt.Errorf("MESSAGE_BROKER_TYPE=%s: unknown broker type", cfg.Type)
	}
}

// printing writes each body the broker accepted as one line on out.
type printing struct {
	broker.Broker
	out io.Writer
}

func (p printing) Publish(ctx context.Context, m broker.Message) error {
	if err := p.Broker.Publish(ctx, m); err != nil {
		return err
	}
	_, err := fmt.Fprintf(p.out, "%s\n", m.Body)
	return err
}
