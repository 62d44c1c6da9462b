package domaineventsotel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

func message() broker.Message {
	return broker.Message{ID: "0b7c1a52-5f0e-4c43-9b8e-6f1b1d2e3a4b", Name: "order.created", Key: "order-1",
		Body: []byte(`{}`), Headers: map[string]string{"x-tenant": "acme"}}
}

func TestSendSpan(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dest     broker.Destination
		span     string
		attrs    map[string]any
		notAttrs []string
	}{
		{name: "rabbitmq", dest: broker.Destination{System: "rabbitmq", Name: "orders.events"},
			span: "send orders.events:order.created",
			attrs: map[string]any{"messaging.system": "rabbitmq", "messaging.destination.name": "orders.events:order.created",
				"messaging.rabbitmq.destination.routing_key": "order.created"},
			notAttrs: []string{"messaging.kafka.message.key"}},
		{name: "rabbitmq default exchange", dest: broker.Destination{System: "rabbitmq"},
			span:  "send order.created",
			attrs: map[string]any{"messaging.destination.name": "order.created"}},
		{name: "kafka", dest: broker.Destination{System: "kafka", Name: "orders.events"},
			span: "send orders.events",
			attrs: map[string]any{"messaging.system": "kafka", "messaging.destination.name": "orders.events",
				"messaging.kafka.message.key": "order-1"},
			notAttrs: []string{"messaging.rabbitmq.destination.routing_key"}},
		{name: "a broker that does not say", span: "send",
			notAttrs: []string{"messaging.system", "messaging.destination.name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTel(t)
			next := &fakeBroker{dest: tc.dest}
			b := domaineventsotel.WrapBroker(next, tl.opts()...)
			msg := message()
			require.NoError(t, b.Publish(context.Background(), msg))

			spans := tl.ended(tc.span)
			require.Len(t, spans, 1, "spans: %v", tl.spans.Ended())
			s := spans[0]
			assert.Equal(t, trace.SpanKindProducer, s.SpanKind())
			assert.Equal(t, codes.Unset, s.Status().Code)
			got := attrs(s.Attributes())
			want := map[string]any{"messaging.operation.name": "send", "messaging.operation.type": "send",
				"messaging.message.id": msg.ID}
			for k, v := range tc.attrs {
				want[k] = v
			}
			for k, v := range want {
				assert.Equal(t, v, got[k], k)
			}
			for _, k := range tc.notAttrs {
				assert.NotContains(t, got, k)
			}
			assert.NotContains(t, got, "error.type")
			assert.Equal(t, "https://opentelemetry.io/schemas/1.43.0", s.InstrumentationScope().SchemaURL)

			// The span's context travels in a copy of the headers.
			sent := next.last()
			m := traceparentRE.FindStringSubmatch(sent.Headers["traceparent"])
			require.NotNil(t, m, "traceparent %q", sent.Headers["traceparent"])
			assert.Equal(t, s.SpanContext().TraceID().String(), m[1])
			assert.Equal(t, s.SpanContext().SpanID().String(), m[2])
			assert.Equal(t, "acme", sent.Headers["x-tenant"])
			assert.Equal(t, map[string]string{"x-tenant": "acme"}, msg.Headers, "the caller's headers are not changed")
			// next gets the span in its ctx.
			assert.Equal(t, s.SpanContext(), trace.SpanContextFromContext(next.ctxs[0]))
		})
	}
}

func TestSendSpanParent(t *testing.T) {
	tl := newTel(t)
	next := &fakeBroker{dest: broker.Destination{System: "kafka", Name: "orders.events"}}
	b := domaineventsotel.WrapBroker(next, tl.opts()...)
	tracer := tl.tp.Tracer("test")

	t.Run("the span in ctx", func(t *testing.T) {
		ctx, req := tracer.Start(context.Background(), "POST /orders")
		require.NoError(t, b.Publish(ctx, message()))
		req.End()
		s := tl.ended("send orders.events")[0]
		assert.Equal(t, req.SpanContext().SpanID(), s.Parent().SpanID())
		assert.Equal(t, req.SpanContext().TraceID(), s.SpanContext().TraceID())
		assert.Empty(t, s.Links())
		tl.spans.Reset()
	})

	t.Run("the message's context when ctx has no span", func(t *testing.T) {
		// What an outbox row or a replayed spool entry carries.
		_, writer := tracer.Start(context.Background(), "commit order")
		writer.End()
		msg := message()
		msg.Headers = map[string]string{}
		tl.prop.Inject(trace.ContextWithSpan(context.Background(), writer), propagation.MapCarrier(msg.Headers))
		stored := msg.Headers["traceparent"]

		require.NoError(t, b.Publish(context.Background(), msg))
		s := tl.ended("send orders.events")[0]
		assert.Equal(t, writer.SpanContext().TraceID(), s.SpanContext().TraceID())
		assert.Equal(t, writer.SpanContext().SpanID(), s.Parent().SpanID())
		assert.True(t, s.Parent().IsRemote())
		require.Len(t, s.Links(), 1)
		assert.Equal(t, writer.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID())
		// The send span is what the consumer follows from now on.
		assert.Contains(t, next.last().Headers["traceparent"], s.SpanContext().SpanID().String())
		assert.Equal(t, stored, msg.Headers["traceparent"], "the caller's headers are not changed")
		tl.spans.Reset()
	})

	t.Run("ctx's span wins, the message's context is linked", func(t *testing.T) {
		_, other := tracer.Start(context.Background(), "earlier")
		other.End()
		msg := message()
		tl.prop.Inject(trace.ContextWithSpan(context.Background(), other), propagation.MapCarrier(msg.Headers))
		ctx, req := tracer.Start(context.Background(), "POST /orders")
		require.NoError(t, b.Publish(ctx, msg))
		req.End()
		s := tl.ended("send orders.events")[0]
		assert.Equal(t, req.SpanContext().SpanID(), s.Parent().SpanID())
		require.Len(t, s.Links(), 1)
		assert.Equal(t, other.SpanContext(), s.Links()[0].SpanContext.WithRemote(false))
		tl.spans.Reset()
	})
}

func TestSendFailure(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnroutable, Err: errors.New("NO_ROUTE")}, "unroutable"},
		{&broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable, Err: context.DeadlineExceeded}, "unavailable"},
		{context.Canceled, "canceled"},
		{errors.New("something else"), "_OTHER"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			tl := newTel(t)
			next := &fakeBroker{dest: broker.Destination{System: "rabbitmq", Name: "orders.events"}, err: tc.err}
			b := domaineventsotel.WrapBroker(next, tl.opts()...)
			err := b.Publish(context.Background(), message())
			require.Same(t, tc.err, err, "the wrapper returns next's error as is")

			s := tl.ended("send orders.events:order.created")[0]
			assert.Equal(t, tc.want, attrs(s.Attributes())["error.type"])
			assert.Equal(t, codes.Error, s.Status().Code)
			assert.Equal(t, tc.err.Error(), s.Status().Description)

			ms := tl.metrics(t)
			dur := ms["messaging.client.operation.duration"].Data.(metricdata.Histogram[float64])
			require.Len(t, dur.DataPoints, 1)
			assert.Equal(t, tc.want, setAttrs(dur.DataPoints[0].Attributes)["error.type"])
			sent := ms["messaging.client.sent.messages"].Data.(metricdata.Sum[int64])
			require.Len(t, sent.DataPoints, 1)
			assert.Equal(t, tc.want, setAttrs(sent.DataPoints[0].Attributes)["error.type"])
		})
	}
}

func TestSendMetrics(t *testing.T) {
	tl := newTel(t)
	next := &fakeBroker{dest: broker.Destination{System: "rabbitmq", Name: "orders.events"}}
	b := domaineventsotel.WrapBroker(next, tl.opts()...)
	for range 3 {
		require.NoError(t, b.Publish(context.Background(), message()))
	}
	m := message()
	m.Name = "order.cancelled"
	require.NoError(t, b.Publish(context.Background(), m))

	ms := tl.metrics(t)
	dur := ms["messaging.client.operation.duration"]
	assert.Equal(t, "s", dur.Unit)
	h := dur.Data.(metricdata.Histogram[float64])
	require.Len(t, h.DataPoints, 2)
	counts := map[string]uint64{}
	for _, dp := range h.DataPoints {
		a := setAttrs(dp.Attributes)
		assert.Equal(t, map[string]any{"messaging.system": "rabbitmq", "messaging.operation.name": "send",
			"messaging.operation.type": "send", "messaging.destination.name": a["messaging.destination.name"]}, a)
		assert.Equal(t, []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}, dp.Bounds)
		counts[a["messaging.destination.name"].(string)] = dp.Count
	}
	assert.Equal(t, map[string]uint64{"orders.events:order.created": 3, "orders.events:order.cancelled": 1}, counts)

	sent := ms["messaging.client.sent.messages"]
	assert.Equal(t, "{message}", sent.Unit)
	sum := sent.Data.(metricdata.Sum[int64])
	assert.True(t, sum.IsMonotonic)
	var total int64
	for _, dp := range sum.DataPoints {
		assert.Equal(t, map[string]any{"messaging.system": "rabbitmq", "messaging.operation.name": "send",
			"messaging.destination.name": setAttrs(dp.Attributes)["messaging.destination.name"]}, setAttrs(dp.Attributes))
		total += dp.Value
	}
	assert.Equal(t, int64(4), total)
}

func TestWrapBrokerPassesOn(t *testing.T) {
	next := &fakeBroker{dest: broker.Destination{System: "kafka", Name: "orders.events"}, health: broker.ErrUnavailable}
	b := domaineventsotel.WrapBroker(next)
	assert.Equal(t, broker.Destination{System: "kafka", Name: "orders.events"}, b.(broker.Describer).Describe(message()))
	assert.ErrorIs(t, b.(broker.HealthChecker).Health(context.Background()), broker.ErrUnavailable)
	require.NoError(t, b.Close(context.Background()))
	assert.Equal(t, 1, next.closed)

	// A broker that can say neither.
	bare := domaineventsotel.WrapBroker(struct{ broker.Broker }{next})
	assert.Equal(t, broker.Destination{}, bare.(broker.Describer).Describe(message()))
	assert.NoError(t, bare.(broker.HealthChecker).Health(context.Background()))

	nb := domaineventsotel.WrapBroker(nil)
	err := nb.Publish(context.Background(), message())
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WrapBroker: next broker is nil")
	assert.ErrorIs(t, nb.Close(context.Background()), broker.ErrInvalid)
}

// With a no-op tracer and nothing to propagate, the message goes on as it
// came: no header map is made.
func TestNoopProviderSendsMessageAsIs(t *testing.T) {
	next := &fakeBroker{dest: broker.Destination{System: "rabbitmq", Name: "orders.events"}}
	b := domaineventsotel.WrapBroker(next, domaineventsotel.WithTracerProvider(tracenoop.NewTracerProvider()),
		domaineventsotel.WithPropagators(propagation.TraceContext{}))
	msg := message()
	msg.Headers = nil
	require.NoError(t, b.Publish(context.Background(), msg))
	assert.Nil(t, next.last().Headers)
}

func TestMiddleware(t *testing.T) {
	tl := newTel(t)
	next := &fakeBroker{dest: broker.Destination{System: "kafka", Name: "t"}}
	b := domaineventsotel.Middleware(tl.opts()...)(next)
	require.NoError(t, b.Publish(context.Background(), message()))
	assert.Len(t, tl.ended("send t"), 1)
}
