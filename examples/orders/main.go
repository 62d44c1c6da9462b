package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/health"
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

	// The readiness probe and status page, when EXAMPLE_STATUS_ADDR asks
	// for them: the example then keeps serving until interrupted.
	addr := os.Getenv("EXAMPLE_STATUS_ADDR")
	if addr != "" {
		h := &health.Handler{}
		if err := h.Add("publisher", health.WithStatus(pub, pub.Status)); err != nil {
			return err
		}
		stop, err := serveStatus(log, addr, h)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stop()) }()
	}

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
	if addr != "" {
		log.Info("serving the status endpoint until interrupted")
		<-ctx.Done()
	}
	return nil
}

// serveStatus serves h's /healthz and /status on addr until stop.
func serveStatus(log *slog.Logger, addr string, h *health.Handler) (stop func() error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("EXAMPLE_STATUS_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", h)
	mux.Handle("/status", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("status endpoint", "addr", ln.Addr().String(), "health", "/healthz", "status", "/status")
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}, nil
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
