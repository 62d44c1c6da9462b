// Command example follows one order through OpenTelemetry: it publishes the
// order's three events inside one root span ("POST /orders"), prints the
// spans to stderr with the SDK's stdout exporter, consumes the events, and
// prints the consumer's spans, which carry the same trace id. A summary on
// stdout says which trace each span belongs to.
//
//	go run ./example                                          # no broker: an in-process loopback, explained on stderr
//	MESSAGE_BROKER_ENABLED=true go run ./example              # RabbitMQ on localhost:5672 (guest/guest)
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=kafka MESSAGE_BROKER_PORT=9092 go run ./example
//
// On RabbitMQ it consumes MESSAGE_BROKER_QUEUE (default
// "domaineventsotel.example", declared and bound to the exchange); on Kafka
// the topic, in the consumer group MESSAGE_BROKER_CLIENT_ID.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg, err := broker.ConfigFromEnv()
	if err == nil {
		err = run(ctx, cfg, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// run is the example: out gets the summary, errOut the spans and logs.
func run(ctx context.Context, cfg broker.Config, out, errOut io.Writer) (err error) {
	// OpenTelemetry set-up, as an application does it once at start-up
	// (here without touching the globals, so that tests can run it too).
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(errOut), stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	recorder := tracetest.NewSpanRecorder() // for the summary
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter), sdktrace.WithSpanProcessor(recorder))
	defer func() { err = errors.Join(err, tp.Shutdown(context.Background())) }()
	tel := []domaineventsotel.Option{
		domaineventsotel.WithTracerProvider(tp),
		domaineventsotel.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
	}
	logger := slog.New(domaineventsotel.NewLogHandler(slog.NewTextHandler(errOut, nil)))

	// The consuming side: typed events from a bus, behind a wrapped handler.
	var mu sync.Mutex
	seen := map[string]bool{}
	bus := eventbus.New()
	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCreated) error {
		logger.InfoContext(ctx, "consumer: order created", "order", e.OrderID) // carries trace_id and span_id
		return nil
	})
	bh, err := bridge.NewHandler(bus)
	if err != nil {
		return err
	}
	handler := domaineventsotel.WrapHandler(func(ctx context.Context, d broker.Delivery) error {
		if err := bh(ctx, d); err != nil {
			return err
		}
		mu.Lock()
		seen[d.ID] = true
		mu.Unlock()
		return nil
	}, tel...)

	// The publishing side: Open with the send spans as its middleware.
	opts := []domainevents.PublisherOption{domainevents.WithLogger(logger),
		domainevents.WithMessageHook(domaineventsotel.MessageHook(tel...)),
		domainevents.WithPublishMiddleware(domaineventsotel.Middleware(tel...))}
	var loop *loopback
	if !cfg.Enabled {
		fmt.Fprintln(errOut, "example: MESSAGE_BROKER_ENABLED is not true, so the events go to an in-process loopback "+
			"broker instead of RabbitMQ or Kafka (set MESSAGE_BROKER_ENABLED=true, with RabbitMQ on localhost:5672, "+
			"to go through a real broker); the spans and the trace are the same.")
		loop = &loopback{}
		opts = append(opts, domainevents.WithDisabledBroker(loop))
	} else {
		if cfg.Queue == "" {
			cfg.Queue = "domaineventsotel.example"
		}
		opts = append(opts, domainevents.WithWaitForConnection())
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pub, err := domainevents.Open(octx, cfg, opts...)
	if err != nil {
		return err
	}

	// One order, inside one root span: the HTTP request that made it.
	rctx, root := tp.Tracer("example").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	orderID, userID := uuid.NewString(), uuid.NewString()
	var ids []string
	for _, e := range []events.Event{
		events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated, Total: events.Cents(12550),
			Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 1, Price: events.Cents(12550)}}},
		events.OrderStatusUpdated{OrderID: orderID, UserID: userID, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress},
		events.OrderCancelled{OrderID: orderID, UserID: userID, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled},
	} {
		if err := pub.Forward(rctx, e); err != nil {
			root.End()
			_ = pub.Close(octx)
			return fmt.Errorf("publish %s: %w", e.EventName(), err)
		}
	}
	root.End()
	if err := pub.Close(octx); err != nil {
		return err
	}

	// Consume them.
	if loop != nil {
		for _, d := range loop.deliveries() {
			ids = append(ids, d.ID)
			if err := handler(context.Background(), d); err != nil {
				return err
			}
		}
	} else {
		for _, s := range recorder.Ended() {
			if s.SpanKind() == trace.SpanKindProducer {
				ids = append(ids, attr(s, "messaging.message.id"))
			}
		}
		if err := consume(ctx, cfg, handler, logger, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if !seen[id] {
					return false
				}
			}
			return true
		}); err != nil {
			return err
		}
	}
	summary(out, root.SpanContext().TraceID(), ids, recorder.Ended())
	return nil
}

// consume runs a subscriber until done says so (at most 30s).
func consume(ctx context.Context, cfg broker.Config, h broker.Handler, logger *slog.Logger, done func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sub, err := domainevents.OpenSubscriber(ctx, cfg, h, domainevents.WithLogger(logger), domainevents.WithWaitForConnection())
	if err != nil {
		return err
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			_ = sub.Close(context.Background())
			return fmt.Errorf("the three events did not come back within 30s: %w", ctx.Err())
		case <-t.C:
		}
	}
	return sub.Close(ctx)
}

// summary prints, for each event, its send and process spans and their
// trace ids.
func summary(out io.Writer, root trace.TraceID, ids []string, spans []sdktrace.ReadOnlySpan) {
	fmt.Fprintf(out, "root span POST /orders: trace %s\n", root)
	for _, id := range ids {
		for _, kind := range []trace.SpanKind{trace.SpanKindProducer, trace.SpanKindConsumer} {
			i := slices.IndexFunc(spans, func(s sdktrace.ReadOnlySpan) bool {
				return s.SpanKind() == kind && attr(s, "messaging.message.id") == id
			})
			if i < 0 {
				continue
			}
			s := spans[i]
			same := "same trace"
			if s.SpanContext().TraceID() != root {
				same = "OTHER TRACE"
			}
			fmt.Fprintf(out, "  %-8s %-55s trace %s (%s) span %s\n", kind, s.Name(), s.SpanContext().TraceID(), same, s.SpanContext().SpanID())
		}
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// loopback is the broker when none is enabled: it keeps what is published,
// for the example to hand to the consumer afterwards, as a queue would.
type loopback struct {
	mu   sync.Mutex
	msgs []broker.Message
}

func (l *loopback) Publish(_ context.Context, m broker.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m.Clone())
	return nil
}

func (l *loopback) Close(context.Context) error { return nil }

// Describe names where messages go, for the spans.
func (l *loopback) Describe(broker.Message) broker.Destination {
	return broker.Destination{Name: "in-process"}
}

func (l *loopback) deliveries() []broker.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]broker.Delivery, len(l.msgs))
	for i, m := range l.msgs {
		out[i] = broker.Delivery{Message: m, Attempt: 1, Source: "in-process",
			Origin: broker.Origin{Destination: "in-process", Partition: -1}}
	}
	return out
}
