package domaineventsotel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// produced publishes a message through a wrapped fake RabbitMQ and returns
// what went out and the send span.
func produced(t *testing.T, tl *tel) (broker.Message, sdktrace.ReadOnlySpan) {
	t.Helper()
	next := &fakeBroker{dest: broker.Destination{System: "rabbitmq", Name: "orders.events"}}
	b := domaineventsotel.WrapBroker(next, tl.opts()...)
	bag, err := baggage.Parse("tenant=acme")
	require.NoError(t, err)
	require.NoError(t, b.Publish(baggage.ContextWithBaggage(context.Background(), bag), message()))
	spans := tl.ended("send orders.events:order.created")
	require.Len(t, spans, 1)
	tl.spans.Reset()
	return next.last(), spans[0]
}

func rabbitDelivery(m broker.Message) broker.Delivery {
	return broker.Delivery{Message: m, Attempt: 1, Source: "queue billing.orders",
		Origin: broker.Origin{System: "rabbitmq", Destination: "billing.orders", Exchange: "orders.events",
			RoutingKey: m.Name, Partition: -1}}
}

func TestProcessSpan(t *testing.T) {
	tl := newTel(t)
	msg, send := produced(t, tl)
	var inHandler context.Context
	h := domaineventsotel.WrapHandler(func(ctx context.Context, d broker.Delivery) error {
		inHandler = ctx
		return nil
	}, tl.opts()...)
	require.NoError(t, h(context.Background(), rabbitDelivery(msg)))

	spans := tl.ended("process orders.events:order.created:billing.orders")
	require.Len(t, spans, 1, "spans: %v", tl.spans.Ended())
	s := spans[0]
	assert.Equal(t, trace.SpanKindConsumer, s.SpanKind())
	// One trace from the producer: the send span is the parent, and linked.
	assert.Equal(t, send.SpanContext().TraceID(), s.SpanContext().TraceID())
	assert.Equal(t, send.SpanContext().SpanID(), s.Parent().SpanID())
	require.Len(t, s.Links(), 1)
	assert.Equal(t, send.SpanContext().TraceID(), s.Links()[0].SpanContext.TraceID())
	assert.Equal(t, send.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID())
	assert.Equal(t, map[string]any{
		"messaging.system": "rabbitmq", "messaging.operation.name": "process", "messaging.operation.type": "process",
		"messaging.destination.name":                 "orders.events:order.created:billing.orders",
		"messaging.message.id":                       msg.ID,
		"messaging.rabbitmq.destination.routing_key": "order.created",
	}, attrs(s.Attributes()))
	// The handler's ctx carries the span and the producer's baggage.
	assert.Equal(t, s.SpanContext(), trace.SpanContextFromContext(inHandler))
	assert.Equal(t, "acme", baggage.FromContext(inHandler).Member("tenant").Value())
}

func TestProcessSpanKafka(t *testing.T) {
	tl := newTel(t)
	msg, _ := produced(t, tl)
	h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, tl.opts()...)
	d := broker.Delivery{Message: msg, Attempt: 3, Origin: broker.Origin{System: "kafka", Destination: "orders.events",
		Partition: 2, Offset: 1234, ConsumerGroup: "billing"}}
	require.NoError(t, h(context.Background(), d))
	s := tl.ended("process orders.events")[0]
	assert.Equal(t, map[string]any{
		"messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
		"messaging.destination.name": "orders.events", "messaging.message.id": msg.ID,
		"messaging.destination.partition.id": "2", "messaging.kafka.offset": int64(1234),
		"messaging.consumer.group.name": "billing", "messaging.kafka.message.key": "order-1",
		"domainevents.delivery.attempt": int64(3),
	}, attrs(s.Attributes()))

	ms := tl.metrics(t)
	consumed := ms["messaging.client.consumed.messages"]
	assert.Equal(t, "{message}", consumed.Unit)
	dp := consumed.Data.(metricdata.Sum[int64]).DataPoints
	require.Len(t, dp, 1)
	assert.Equal(t, int64(1), dp[0].Value)
	want := map[string]any{"messaging.system": "kafka", "messaging.operation.name": "process",
		"messaging.destination.name": "orders.events", "messaging.consumer.group.name": "billing",
		"messaging.destination.partition.id": "2"}
	assert.Equal(t, want, setAttrs(dp[0].Attributes))
	proc := ms["messaging.process.duration"]
	assert.Equal(t, "s", proc.Unit)
	hp := proc.Data.(metricdata.Histogram[float64]).DataPoints
	require.Len(t, hp, 1)
	assert.Equal(t, want, setAttrs(hp[0].Attributes))
	assert.Equal(t, []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}, hp[0].Bounds)
}

func TestProcessParent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []domaineventsotel.Option
		ambient bool
		parent  string // "producer", "ambient", "none"
		links   []string
	}{
		{name: "default, no span in ctx", parent: "producer", links: []string{"producer"}},
		{name: "default, a span in ctx", ambient: true, parent: "ambient", links: []string{"producer"}},
		{name: "links only, no span in ctx", opts: []domaineventsotel.Option{domaineventsotel.WithLinksOnly()},
			parent: "none", links: []string{"producer"}},
		{name: "links only, a span in ctx", opts: []domaineventsotel.Option{domaineventsotel.WithLinksOnly()},
			ambient: true, parent: "ambient", links: []string{"producer"}},
		{name: "producer parent, a span in ctx", opts: []domaineventsotel.Option{domaineventsotel.WithProducerParent()},
			ambient: true, parent: "producer", links: []string{"producer", "ambient"}},
		{name: "producer parent, no span in ctx", opts: []domaineventsotel.Option{domaineventsotel.WithProducerParent()},
			parent: "producer", links: []string{"producer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTel(t)
			msg, send := produced(t, tl)
			ctx := context.Background()
			var ambient trace.Span
			if tc.ambient {
				ctx, ambient = tl.tp.Tracer("test").Start(ctx, "poll")
				defer ambient.End()
			}
			h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, tl.opts(tc.opts...)...)
			require.NoError(t, h(ctx, rabbitDelivery(msg)))
			s := tl.ended("process orders.events:order.created:billing.orders")[0]
			name := func(sc trace.SpanContext) string {
				switch {
				case !sc.IsValid():
					return "none"
				case sc.SpanID() == send.SpanContext().SpanID():
					return "producer"
				case ambient != nil && sc.SpanID() == ambient.SpanContext().SpanID():
					return "ambient"
				}
				return "other " + sc.SpanID().String()
			}
			assert.Equal(t, tc.parent, name(s.Parent()))
			var links []string
			for _, l := range s.Links() {
				links = append(links, name(l.SpanContext))
			}
			assert.Equal(t, tc.links, links)
		})
	}
}

func TestProcessWithoutProducerContext(t *testing.T) {
	tl := newTel(t)
	h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, tl.opts()...)
	m := message()
	m.Headers = map[string]string{"traceparent": "garbage"}
	require.NoError(t, h(context.Background(), rabbitDelivery(m)))
	s := tl.ended("process orders.events:order.created:billing.orders")[0]
	assert.False(t, s.Parent().IsValid())
	assert.Empty(t, s.Links())
}

func TestProcessFailure(t *testing.T) {
	tl := newTel(t)
	msg, _ := produced(t, tl)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("decode: %w", broker.ErrInvalid), "invalid"},
		{errors.New("database down"), "_OTHER"},
	} {
		tl.spans.Reset()
		h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return tc.err }, tl.opts()...)
		err := h(context.Background(), rabbitDelivery(msg))
		require.Same(t, tc.err, err)
		s := tl.ended("process orders.events:order.created:billing.orders")[0]
		assert.Equal(t, tc.want, attrs(s.Attributes())["error.type"])
		assert.Equal(t, codes.Error, s.Status().Code)
	}
	got := map[string]uint64{}
	for _, dp := range tl.metrics(t)["messaging.process.duration"].Data.(metricdata.Histogram[float64]).DataPoints {
		et, _ := setAttrs(dp.Attributes)["error.type"].(string)
		got[et] += dp.Count
	}
	assert.Equal(t, map[string]uint64{"invalid": 1, "_OTHER": 1}, got)
}

func TestProcessPanic(t *testing.T) {
	tl := newTel(t)
	msg, _ := produced(t, tl)
	h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { panic("boom") }, tl.opts()...)
	assert.PanicsWithValue(t, "boom", func() { _ = h(context.Background(), rabbitDelivery(msg)) },
		"the panic goes on up to the subscriber")
	s := tl.ended("process orders.events:order.created:billing.orders")[0]
	assert.Equal(t, "panic", attrs(s.Attributes())["error.type"])
	assert.Equal(t, codes.Error, s.Status().Code)
	assert.Equal(t, "panic: boom", s.Status().Description)
}

func TestWrapHandlerNil(t *testing.T) {
	err := domaineventsotel.WrapHandler(nil)(context.Background(), broker.Delivery{})
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WrapHandler: handler is nil")
}

func TestProcessDestinationNames(t *testing.T) {
	for _, tc := range []struct {
		o    broker.Origin
		want string
	}{
		{broker.Origin{System: "rabbitmq", Exchange: "orders.events", RoutingKey: "order.created", Destination: "billing"}, "process orders.events:order.created:billing"},
		{broker.Origin{System: "rabbitmq", Exchange: "", RoutingKey: "billing", Destination: "billing"}, "process billing"},
		{broker.Origin{System: "rabbitmq", Exchange: "dlx", RoutingKey: "billing", Destination: "billing"}, "process dlx:billing"},
		{broker.Origin{System: "kafka", Destination: "orders.events", Partition: 0}, "process orders.events"},
		{broker.Origin{}, "process"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			tl := newTel(t)
			h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, tl.opts()...)
			require.NoError(t, h(context.Background(), broker.Delivery{Message: message(), Origin: tc.o}))
			assert.Len(t, tl.ended(tc.want), 1, "spans: %v", tl.spans.Ended())
		})
	}
}

// The hook stores the writer's context; a wrapped relay broker's send span
// is its child; the consumer's span the send's: one trace.
func TestMessageHookThroughRelay(t *testing.T) {
	tl := newTel(t)
	hook := domaineventsotel.MessageHook(tl.opts()...)
	tracer := tl.tp.Tracer("test")

	ctx, req := tracer.Start(context.Background(), "POST /orders")
	m := message()
	orig := m.Headers
	hook(ctx, &m)
	req.End()
	assert.Equal(t, map[string]string{"x-tenant": "acme"}, orig, "the hook gives the message a new map")
	require.Regexp(t, traceparentRE, m.Headers["traceparent"])

	next := &fakeBroker{dest: broker.Destination{System: "rabbitmq", Name: "orders.events"}}
	relay := domaineventsotel.WrapBroker(next, tl.opts()...)
	require.NoError(t, relay.Publish(context.Background(), m)) // the relay's ctx has no span
	h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, tl.opts()...)
	require.NoError(t, h(context.Background(), rabbitDelivery(next.last())))

	send := tl.ended("send orders.events:order.created")[0]
	proc := tl.ended("process orders.events:order.created:billing.orders")[0]
	tid := req.SpanContext().TraceID()
	assert.Equal(t, tid, send.SpanContext().TraceID())
	assert.Equal(t, tid, proc.SpanContext().TraceID())
	assert.Equal(t, req.SpanContext().SpanID(), send.Parent().SpanID())
	assert.Equal(t, req.SpanContext().SpanID(), send.Links()[0].SpanContext.SpanID())
	assert.Equal(t, send.SpanContext().SpanID(), proc.Parent().SpanID())
	assert.Equal(t, send.SpanContext().SpanID(), proc.Links()[0].SpanContext.SpanID())
}

func TestMessageHookLeavesAlone(t *testing.T) {
	tl := newTel(t)
	hook := domaineventsotel.MessageHook(tl.opts()...)

	t.Run("no span in ctx", func(t *testing.T) {
		m := message()
		hook(context.Background(), &m)
		assert.Equal(t, map[string]string{"x-tenant": "acme"}, m.Headers)
	})
	t.Run("a message that carries a context already", func(t *testing.T) {
		m := message()
		m.Headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		ctx, s := tl.tp.Tracer("test").Start(context.Background(), "x")
		defer s.End()
		hook(ctx, &m)
		assert.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", m.Headers["traceparent"])
	})
	t.Run("nil message", func(t *testing.T) {
		hook(context.Background(), nil)
	})
	t.Run("baggage alone", func(t *testing.T) {
		bag, err := baggage.Parse("tenant=acme")
		require.NoError(t, err)
		m := message()
		m.Headers = nil
		hook(baggage.ContextWithBaggage(context.Background(), bag), &m)
		assert.Equal(t, "tenant=acme", m.Headers["baggage"])
		assert.NotContains(t, m.Headers, "traceparent")
	})
}
