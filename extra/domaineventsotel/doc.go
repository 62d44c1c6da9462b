// Package domaineventsotel instruments domainevents with OpenTelemetry:
// traces that run from the publishing request through RabbitMQ or Kafka
// (and through the transactional outbox) into the consumer, the messaging
// metrics of the OpenTelemetry semantic conventions, metrics of the
// library's own (retries, dead letters, reconnects, spool depth, outbox
// backlog and lag), and trace ids in logs.
//
// It is a module of its own (go.opentelemetry.io/otel API only; the SDK is
// for its tests and example), so that the core library depends on no
// OpenTelemetry code: it works through the core's hooks, broker.Broker
// decorators, broker.Handler wrappers, broker.Observer and the message
// hooks of domainevents, bridge and outbox.
//
// # Wiring
//
//	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
//		propagation.TraceContext{}, propagation.Baggage{}))
//	pub, err := domainevents.Open(ctx, cfg,
//		domainevents.WithMessageHook(domaineventsotel.MessageHook()),      // the trace context goes with the event (async queue, spool)
//		domainevents.WithPublishMiddleware(domaineventsotel.Middleware()), // send spans, per attempt
//		domainevents.WithObserver(domaineventsotel.NewObserver()))         // retries, dead letters, ...
//	store, err := outbox.New(db, outbox.Postgres,
//		outbox.WithMessageHook(domaineventsotel.MessageHook()))           // the trace context goes with the row
//	sub, err := domainevents.OpenSubscriber(ctx, cfg, bridge.NewHandler(bus),
//		domainevents.WithInbox(store, "billing"),                          // once per event id, in commit order
//		domainevents.WithHandlerMiddleware(domaineventsotel.HandlerMiddleware()), // process spans, around the inbox
//		domainevents.WithObserver(domaineventsotel.NewObserver()))         // retries, dead letters, inbox duplicates
//	relay, err := outbox.NewRelay(store, domaineventsotel.WrapBroker(adapter),
//		outbox.WithObserver(domaineventsotel.NewObserver()))               // backlog, lag
//	logger := slog.New(domaineventsotel.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil)))
//
// Every function takes [WithTracerProvider], [WithMeterProvider] and
// [WithPropagators]; each defaults to the OpenTelemetry global. The
// global propagator sends nothing until the application sets one (above).
//
// # Semantic conventions
//
// Names follow the messaging conventions of OpenTelemetry semantic
// conventions 1.43.0 ([SemconvVersion]; go.opentelemetry.io/otel/semconv/v1.43.0,
// still marked Development), recorded as the tracers' and meters' schema
// URL.
//
// # Spans
//
// [WrapBroker]: one PRODUCER span per Publish (per attempt inside Open's
// publish middleware), named "send <messaging.destination.name>", with
//
//   - messaging.system: "rabbitmq" or "kafka" (left out when the broker
//     does not say, as the noop broker)
//   - messaging.operation.name: "send"; messaging.operation.type: "send"
//   - messaging.destination.name: RabbitMQ "{exchange}:{routing key}"
//     (routing key = event name); Kafka the topic
//   - messaging.message.id: the event id
//   - messaging.rabbitmq.destination.routing_key (RabbitMQ)
//   - messaging.kafka.message.key: the record key, the order id (Kafka)
//   - error.type on failure, see Errors
//
// Parent: the span in the publisher's ctx; else the trace context the
// message carries ([MessageHook]'s: an outbox row, an event from the
// asynchronous queue or the spool); a context the message carries is also
// linked. The span's context is injected into a copy of the message's
// headers (traceparent, tracestate).
//
// [WrapHandler]: one CONSUMER span per delivery, named "process
// <messaging.destination.name>", with
//
//   - messaging.system, messaging.message.id
//   - messaging.operation.name: "process"; messaging.operation.type: "process"
//   - messaging.destination.name: RabbitMQ "{exchange}:{routing key}:{queue}"
//     (empty parts left out, the queue left out when it equals the routing
//     key); Kafka the topic
//   - messaging.rabbitmq.destination.routing_key (RabbitMQ)
//   - messaging.destination.partition.id, messaging.kafka.offset,
//     messaging.consumer.group.name, messaging.kafka.message.key (Kafka)
//   - domainevents.delivery.attempt: the attempt, when it is not the first
//   - error.type when the handler fails ("panic" for a panic)
//
// Link: the producer's span, always. Parent: the producer's span when the
// handler's ctx carries no span (the default; our subscribers give none),
// else that span ([WithLinksOnly], [WithProducerParent] change it).
//
// # Metrics
//
// From [WrapBroker] and [WrapHandler], the conventions' instruments:
//
//   - messaging.client.operation.duration, histogram, s, buckets 0.005 …
//     10 s as the conventions give: each send; messaging.system,
//     messaging.operation.name "send", messaging.operation.type "send",
//     messaging.destination.name, error.type on failure
//   - messaging.client.sent.messages, counter {message}: each send,
//     successful or not; messaging.system, messaging.operation.name "send",
//     messaging.destination.name, error.type on failure
//   - messaging.client.consumed.messages, counter {message}: each delivery
//     handed to the handler; messaging.system, messaging.operation.name
//     "process", messaging.destination.name, messaging.consumer.group.name
//     and messaging.destination.partition.id (Kafka)
//   - messaging.process.duration, histogram, s, the same buckets: each
//     handler run; the attributes of consumed.messages and error.type on
//     failure
//
// From [NewObserver], under the domainevents namespace: domainevents.retries,
// domainevents.dead_letters, domainevents.connects, domainevents.disconnects,
// domainevents.spool.depth, domainevents.outbox.backlog,
// domainevents.outbox.lag (see NewObserver for units and attributes).
//
// The module's folder has a Grafana dashboard over these metrics,
// dashboards/domainevents.json, with their names as the OpenTelemetry
// Prometheus exporter writes them (messaging_client_sent_messages_total,
// domainevents_outbox_lag_seconds, ...; the README has the table).
//
// # Errors
//
// error.type is the broker category of the error (broker.Category):
// "unavailable", "unroutable", "rejected", "too_large", "invalid",
// "unauthorized", "closed", "dead_lettered", "deadline_exceeded",
// "canceled"; "_OTHER" for an error of none (most handler errors), "panic"
// for a handler's panic. Span status is Error with the error's text, which
// the library keeps free of secrets.
//
// # Logs
//
// [NewLogHandler] wraps a slog.Handler: records logged with a ctx that
// carries a span get trace_id and span_id.
//
// # Cost
//
// With no-op providers a publish costs one allocation more (the ctx that
// carries the non-recording span): span names, start attributes and the
// metrics' attribute sets are built once per destination (and error
// type), per-message attributes are set only on recording spans, and the
// headers are copied only when there is a trace context to send. The
// benchmarks in this module compare a bare broker, no-op providers and the
// SDK in the same run.
package domaineventsotel
