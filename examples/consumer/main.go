package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

func main() {
	n := flag.Int("n", 0, "stop after this many events (0: run until Ctrl-C)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout, *n); err != nil {
		log.Error("consumer failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out io.Writer, limit int) error {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if !cfg.Enabled {
		return errors.New("MESSAGE_BROKER_ENABLED is false: there is no broker to consume from (set it to true)")
	}

	// The service's own code: typed handlers on a bus, nothing broker-specific.
	bus := eventbus.New()
	var mu sync.Mutex
	count := 0
	enough := make(chan struct{})
	print := func(format string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(out, format+"\n", args...); err != nil {
			return err
		}
		count++
		if count == limit {
			close(enough)
		}
		return nil
	}
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCreated) error {
		env, _ := bridge.EnvelopeFrom(ctx)
		return print("%s  order.created         order=%s user=%s items=%d total=%s (event %s)", env.Timestamp.Format(time.RFC3339), e.OrderID, e.UserID, len(e.Items), e.Total, env.ID)
	})
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderStatusUpdated) error {
		env, _ := bridge.EnvelopeFrom(ctx)
		return print("%s  order.status.updated  order=%s %s -> %s (event %s)", env.Timestamp.Format(time.RFC3339), e.OrderID, e.OldStatus, e.NewStatus, env.ID)
	})
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCancelled) error {
		env, _ := bridge.EnvelopeFrom(ctx)
		return print("%s  order.cancelled       order=%s was %s (event %s)", env.Timestamp.Format(time.RFC3339), e.OrderID, e.OldStatus, env.ID)
	})
	// Redeliveries (at least once) are skipped within this process.
	handler, err := bridge.NewHandler(bus, bridge.WithDedup(bridge.NewDedup(100_000, time.Hour)))
	if err != nil {
		return err
	}

	if cfg.Queue == "" {
		cfg.Queue = "orders.events.all" // the queue examples/orders declares on RabbitMQ
	}
	if cfg.ClientID == broker.DefaultConfig().ClientID {
		cfg.ClientID = "orders-consumer-example" // the Kafka consumer group
	}
	sub, err := domainevents.OpenSubscriber(ctx, cfg, handler, domainevents.WithLogger(log))
	if err != nil {
		return err
	}
	log.Info("consuming; Ctrl-C to stop", "config", cfg)
	select {
	case <-ctx.Done():
	case <-enough:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	return sub.Close(sctx)
}
