package domaineventsotel

import (
	"context"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents/broker"
)

// MessageHook returns a function that writes the trace context of its ctx
// (the span of the request or transaction that creates the message) into
// the message's headers: W3C traceparent and tracestate, with the default
// propagators, and baggage if the propagators carry it. It is the shape of
// outbox.WithMessageHook, which calls it in the writer's transaction
// before the row is stored:
//
//	store, err := outbox.New(db, outbox.Postgres,
//		outbox.WithMessageHook(domaineventsotel.MessageHook()))
//
// The relay later publishes the row from a ctx of its own, without a span;
// a relay broker wrapped with [WrapBroker] then makes its send span a child
// of (and linked to) the context stored with the row, so that one trace
// runs from the request through the commit and the relay to the consumer.
//
// domainevents.WithMessageHook (and bridge.WithMessageHook) take it too:
// there it runs before the asynchronous queue, the retry layer and the
// spool, so that an event published by an asynchronous worker, or replayed
// from the spool after an outage, stays in the request's trace:
//
//	pub, err := domainevents.Open(ctx, cfg,
//		domainevents.WithMessageHook(domaineventsotel.MessageHook()),
//		domainevents.WithPublishMiddleware(domaineventsotel.Middleware()))
//
// The hook leaves a message that already carries a trace context alone,
// and does nothing when ctx has neither a span nor baggage. It never
// changes the map it finds in m.Headers: it gives m a new one. Only
// WithPropagators applies.
func MessageHook(opts ...Option) func(ctx context.Context, m *broker.Message) {
	prop := newConfig(opts).prop
	return func(ctx context.Context, m *broker.Message) {
		if m == nil {
			return
		}
		if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
			return
		}
		if len(m.Headers) > 0 {
			carried := prop.Extract(context.Background(), propagation.MapCarrier(m.Headers))
			if trace.SpanContextFromContext(carried).IsValid() {
				return
			}
		}
		h := make(map[string]string, len(m.Headers)+2)
		for k, v := range m.Headers {
			h[k] = v
		}
		prop.Inject(ctx, propagation.MapCarrier(h))
		m.Headers = h
	}
}
