package domaineventsotel

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents/broker"
)

// WrapBroker returns a broker.Broker that publishes through next and, for
// each Publish, makes a PRODUCER span "send <destination>", carries its
// trace context to consumers in a copy of the message's headers (W3C
// traceparent and tracestate with the default propagators) and records
// messaging.client.operation.duration and messaging.client.sent.messages.
// Inside domainevents.Open give it as the publish middleware, so that each
// attempt of the retry layer, and each replay of the spool, is a span of
// its own, and [MessageHook] as the message hook, so that the request's
// trace context stays with an event queued asynchronously or spooled:
//
//	pub, err := domainevents.Open(ctx, cfg,
//		domainevents.WithMessageHook(domaineventsotel.MessageHook()),
//		domainevents.WithPublishMiddleware(domaineventsotel.Middleware()))
//
// The span's parent is the span in ctx (the HTTP request's, say). When ctx
// carries none but the message already does (what [MessageHook] stored:
// an outbox row, an event queued asynchronously or replayed from the
// spool), the message's context is the parent; a context the message
// carries is also linked. The span is the message's creation
// context from then on: its context replaces the message's traceparent in
// what next publishes, so that the consumer's span follows the send that
// delivered it.
//
// The returned broker implements broker.Describer and broker.HealthChecker
// by asking next (a zero Destination, and nil health, when next cannot
// say), and closes next on Close. Publish and Close behave as next's: the
// wrapper adds no error of its own and never changes msg. A nil next gives
// a broker whose Publish and Close return an error matching
// broker.ErrInvalid.
func WrapBroker(next broker.Broker, opts ...Option) broker.Broker {
	if next == nil {
		return nilBroker{}
	}
	c := newConfig(opts)
	b := &tracedBroker{next: next, tracer: c.tracer(), prop: c.prop, metrics: newClientMetrics(c.meter())}
	b.describer, _ = next.(broker.Describer)
	return b
}

// Middleware returns WrapBroker with opts as a function, the shape
// domainevents.WithPublishMiddleware takes.
func Middleware(opts ...Option) func(broker.Broker) broker.Broker {
	return func(next broker.Broker) broker.Broker { return WrapBroker(next, opts...) }
}

type tracedBroker struct {
	next      broker.Broker
	describer broker.Describer // nil when next cannot say
	tracer    trace.Tracer
	prop      propagation.TextMapPropagator
	metrics   *clientMetrics
	dests     cache[broker.Destination, *sendDest]
}

// sendDest is what a destination's spans share, built once: the name and
// the attributes a sampler may look at, given when the span starts.
type sendDest struct {
	name  string // messaging.destination.name
	span  string // span name
	start []trace.SpanStartOption
}

func (b *tracedBroker) destination(m broker.Message) (broker.Destination, *sendDest) {
	var d broker.Destination
	if b.describer != nil {
		d = b.describer.Describe(m)
	}
	return d, b.dests.get(d, func() *sendDest { return newSendDest(d) })
}

func newSendDest(d broker.Destination) *sendDest {
	sd := &sendDest{name: sendDestination(d)}
	sd.span = spanName(opSend, sd.name)
	attrs := system(d.System, nil)
	attrs = append(attrs, semconv.MessagingOperationNameKey.String(opSend), semconv.MessagingOperationTypeSend)
	if sd.name != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(sd.name))
	}
	if d.System == "rabbitmq" && d.RoutingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey))
	}
	sd.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...)}
	return sd
}

// Publish publishes msg through next inside a send span (see [WrapBroker]).
func (b *tracedBroker) Publish(ctx context.Context, msg broker.Message) error {
	d, sd := b.destination(msg)

	parent := ctx
	var links []trace.Link
	if len(msg.Headers) > 0 {
		carried := b.prop.Extract(context.Background(), propagation.MapCarrier(msg.Headers))
		if sc := trace.SpanContextFromContext(carried); sc.IsValid() {
			links = []trace.Link{{SpanContext: sc}}
			if !trace.SpanContextFromContext(ctx).IsValid() {
				parent = trace.ContextWithRemoteSpanContext(ctx, sc)
				if bg := baggage.FromContext(carried); bg.Len() > 0 && baggage.FromContext(ctx).Len() == 0 {
					parent = baggage.ContextWithBaggage(parent, bg)
				}
			}
		}
	}

	start := sd.start
	if links != nil {
		start = append(start[:len(start):len(start)], trace.WithLinks(links...))
	}
	sctx, span := b.tracer.Start(parent, sd.span, start...)
	if span.IsRecording() {
		// Attributes of this message alone: not for samplers, and not
		// worth an allocation when nothing records them.
		var kv [2]attribute.KeyValue
		n := 0
		if msg.ID != "" {
			kv[n], n = semconv.MessagingMessageID(msg.ID), n+1
		}
		if d.System == "kafka" && msg.Key != "" {
			kv[n], n = semconv.MessagingKafkaMessageKey(msg.Key), n+1
		}
		span.SetAttributes(kv[:n]...)
	}

	if span.SpanContext().IsValid() || baggage.FromContext(sctx).Len() > 0 {
		h := make(map[string]string, len(msg.Headers)+2)
		for k, v := range msg.Headers {
			h[k] = v
		}
		b.prop.Inject(sctx, propagation.MapCarrier(h))
		msg.Headers = h
	}

	m := b.metrics
	measure := m.opDuration.Enabled(ctx) || m.sent.Enabled(ctx)
	var began time.Time
	if measure {
		began = time.Now()
	}
	err := b.next.Publish(sctx, msg)

	et := ""
	if err != nil {
		et = errorType(err)
		span.SetAttributes(semconv.ErrorTypeKey.String(et))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()

	if measure {
		m.opDuration.RecordSet(ctx, time.Since(began).Seconds(),
			m.set(setKey{metric: setSendDuration, system: d.System, dest: sd.name, errType: et, partition: -1}))
		m.sent.AddSet(ctx, 1, m.set(setKey{metric: setSent, system: d.System, dest: sd.name, errType: et, partition: -1}))
	}
	return err
}

// Close closes next.
func (b *tracedBroker) Close(ctx context.Context) error { return b.next.Close(ctx) }

// Describe asks next (see broker.Describer).
func (b *tracedBroker) Describe(m broker.Message) broker.Destination {
	if b.describer == nil {
		return broker.Destination{}
	}
	return b.describer.Describe(m)
}

// Health asks next (see broker.HealthChecker); nil when next cannot say.
func (b *tracedBroker) Health(ctx context.Context) error {
	if h, ok := b.next.(broker.HealthChecker); ok {
		return h.Health(ctx)
	}
	return nil
}

// nilBroker is what WrapBroker(nil) returns: every call says what is wrong.
type nilBroker struct{}

var errNilBroker = &broker.Error{Op: "domaineventsotel: options", Kind: broker.ErrInvalid,
	Err: errors.New("WrapBroker: next broker is nil")}

func (nilBroker) Publish(context.Context, broker.Message) error { return errNilBroker }
func (nilBroker) Close(context.Context) error                   { return errNilBroker }
