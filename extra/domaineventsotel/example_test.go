package domaineventsotel_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// Open with a send span per publish attempt, and the library's own
// metrics; OpenSubscriber with a process span per delivery.
func Example() {
	ctx := context.Background()
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		fmt.Println(err)
		return
	}
	pub, err := domainevents.Open(ctx, cfg,
		domainevents.WithMessageHook(domaineventsotel.MessageHook()),
		domainevents.WithPublishMiddleware(domaineventsotel.Middleware()),
		domainevents.WithObserver(domaineventsotel.NewObserver()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pub.Close(ctx)

	if cfg.Enabled {
		bus := eventbus.New()
		h, _ := bridge.NewHandler(bus)
		sub, err := domainevents.OpenSubscriber(ctx, cfg, domaineventsotel.WrapHandler(h),
			domainevents.WithObserver(domaineventsotel.NewObserver()))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer sub.Close(ctx)
	}
}

// The span a publish makes, and the trace context it sends with the
// message.
func ExampleWrapBroker() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	b := domaineventsotel.WrapBroker(rabbitLike{}, domaineventsotel.WithTracerProvider(tp),
		domaineventsotel.WithPropagators(propagation.TraceContext{}))

	_ = b.Publish(context.Background(), broker.Message{ID: "e-1", Name: "order.created", Key: "o-1"})

	s := spans.Ended()[0]
	fmt.Println(s.Name(), s.SpanKind())
	for _, kv := range s.Attributes() {
		fmt.Printf("  %s=%s\n", kv.Key, kv.Value.Emit())
	}
	// Output:
	// send orders.events:order.created producer
	//   messaging.system=rabbitmq
	//   messaging.operation.name=send
	//   messaging.operation.type=send
	//   messaging.destination.name=orders.events:order.created
	//   messaging.rabbitmq.destination.routing_key=order.created
	//   messaging.message.id=e-1
}

// Log lines written inside a traced ctx name the trace.
func ExampleNewLogHandler() {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	logger := slog.New(domaineventsotel.NewLogHandler(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime})))

	// Inside a handler wrapped by WrapHandler, ctx carries the process span.
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	logger.InfoContext(ctx, "order billed", "order", "o-1")
	logger.Info("no span, no ids")
	// Output:
	// level=INFO msg="order billed" order=o-1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7
	// level=INFO msg="no span, no ids"
}

// rabbitLike accepts everything and says it sends to RabbitMQ.
type rabbitLike struct{}

func (rabbitLike) Publish(context.Context, broker.Message) error { return nil }
func (rabbitLike) Close(context.Context) error                   { return nil }
func (rabbitLike) Describe(m broker.Message) broker.Destination {
	return broker.Destination{System: "rabbitmq", Name: "orders.events", RoutingKey: m.Name}
}
