package domaineventsotel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents/broker"
)

// WrapHandler returns a broker.Handler that runs h inside a CONSUMER span
// "process <destination>" and records messaging.client.consumed.messages
// (when the delivery arrives) and messaging.process.duration (when h
// returns). Give it to a subscriber, or to domainevents.OpenSubscriber:
//
//	sub, err := domainevents.OpenSubscriber(ctx, cfg,
//		domaineventsotel.WrapHandler(bridge.NewHandler(bus)))
//
// The producer's trace context is read from the delivery's headers (W3C
// traceparent and tracestate with the default propagators). The span
// always links to it. Its parent, by default, is the producer's span when
// the handler's ctx carries no span (the subscribers of this library give
// handlers a ctx without one), so that one trace runs from the publisher
// into the consumer; when ctx does carry a span (a consumer that handles
// deliveries inside a request of its own), that span stays the parent, as
// the messaging conventions recommend. [WithLinksOnly] never takes the
// producer's span as parent; [WithProducerParent] always does, linking the
// ctx's span instead. Baggage the producer sent is put in ctx when ctx has
// none.
//
// h runs with a ctx that carries the span, so that what it logs (through
// [NewLogHandler]) and publishes is part of the trace. An error h returns
// sets the span's status and error.type (the error's broker category, or
// "_OTHER"); a panic is recorded as error.type "panic" and goes on up to
// the subscriber, which turns it into an error. h's result is returned as
// is. A nil h gives a handler that returns an error matching
// broker.ErrInvalid.
func WrapHandler(h broker.Handler, opts ...Option) broker.Handler {
	if h == nil {
		return func(context.Context, broker.Delivery) error {
			return &broker.Error{Op: "domaineventsotel: options", Kind: broker.ErrInvalid,
				Err: errors.New("WrapHandler: handler is nil")}
		}
	}
	c := newConfig(opts)
	w := &tracedHandler{next: h, tracer: c.tracer(), prop: c.prop, parent: c.parent, metrics: newClientMetrics(c.meter())}
	return w.handle
}

// HandlerMiddleware returns WrapHandler with opts as a function, the shape
// domainevents.WithHandlerMiddleware takes: the process span then wraps
// the inbox of domainevents.WithInbox too (its transaction, and the
// duplicates it skips, are part of the span).
func HandlerMiddleware(opts ...Option) func(broker.Handler) broker.Handler {
	return func(next broker.Handler) broker.Handler { return WrapHandler(next, opts...) }
}

type tracedHandler struct {
	next    broker.Handler
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	parent  parentMode
	metrics *clientMetrics
}

func (w *tracedHandler) handle(ctx context.Context, d broker.Delivery) (err error) {
	o := d.Origin
	dest := processDestination(o)
	partition := int32(-1)
	if o.System == "kafka" {
		partition = o.Partition
	}

	var producer trace.SpanContext
	if len(d.Headers) > 0 {
		carried := w.prop.Extract(context.Background(), propagation.MapCarrier(d.Headers))
		producer = trace.SpanContextFromContext(carried)
		if bg := baggage.FromContext(carried); bg.Len() > 0 && baggage.FromContext(ctx).Len() == 0 {
			ctx = baggage.ContextWithBaggage(ctx, bg)
		}
	}
	parent := ctx
	var links []trace.Link
	if producer.IsValid() {
		links = append(links, trace.Link{SpanContext: producer})
		ambient := trace.SpanContextFromContext(ctx)
		switch {
		case w.parent == parentCreation:
			parent = trace.ContextWithRemoteSpanContext(ctx, producer)
			if ambient.IsValid() {
				links = append(links, trace.Link{SpanContext: ambient})
			}
		case w.parent == parentAuto && !ambient.IsValid():
			parent = trace.ContextWithRemoteSpanContext(ctx, producer)
		}
	}

	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = system(o.System, attrs)
	attrs = append(attrs, semconv.MessagingOperationNameKey.String(opProcess), semconv.MessagingOperationTypeProcess)
	if dest != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(dest))
	}
	if d.ID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(d.ID))
	}
	switch o.System {
	case "rabbitmq":
		if o.RoutingKey != "" {
			attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(o.RoutingKey))
		}
	case "kafka":
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(partitionID(o.Partition)),
			semconv.MessagingKafkaOffset(int(o.Offset)))
		if o.ConsumerGroup != "" {
			attrs = append(attrs, semconv.MessagingConsumerGroupName(o.ConsumerGroup))
		}
		if d.Key != "" {
			attrs = append(attrs, semconv.MessagingKafkaMessageKey(d.Key))
		}
	}
	if d.Attempt > 1 {
		attrs = append(attrs, attrAttempt.Int(d.Attempt))
	}

	m := w.metrics
	if m.consumed.Enabled(ctx) {
		m.consumed.AddSet(ctx, 1, m.set(setKey{metric: setConsumed, system: o.System, dest: dest, group: o.ConsumerGroup, partition: partition}))
	}

	sctx, span := w.tracer.Start(parent, spanName(opProcess, dest), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...), trace.WithLinks(links...))
	start := time.Now()
	done := false
	defer func() {
		et := ""
		if !done {
			// h panicked (or called runtime.Goexit: then r is nil and
			// there is nothing to re-panic).
			et = "panic"
			if r := recover(); r != nil {
				span.SetStatus(codes.Error, fmt.Sprint("panic: ", r))
				defer panic(r)
			} else {
				span.SetStatus(codes.Error, "handler exited without returning")
			}
		} else if err != nil {
			et = errorType(err)
			span.SetStatus(codes.Error, err.Error())
		}
		if et != "" {
			span.SetAttributes(semconv.ErrorTypeKey.String(et))
		}
		span.End()
		if m.process.Enabled(ctx) {
			m.process.RecordSet(ctx, time.Since(start).Seconds(),
				m.set(setKey{metric: setProcessDuration, system: o.System, dest: dest, group: o.ConsumerGroup, errType: et, partition: partition}))
		}
	}()
	err = w.next(sctx, d)
	done = true
	return err
}
