package domaineventsotel

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/domainevents/domainevents/broker"
)

// Names of the metrics [NewObserver] records, under the domainevents
// namespace (the messaging conventions have none for these).
const (
	// MetricRetries counts failed attempts that will be retried.
	MetricRetries = "domainevents.retries"
	// MetricDeadLetters counts messages dead-lettered.
	MetricDeadLetters = "domainevents.dead_letters"
	// MetricConnects counts connections made (the first and reconnects).
	MetricConnects = "domainevents.connects"
	// MetricDisconnects counts connections lost.
	MetricDisconnects = "domainevents.disconnects"
	// MetricSpoolDepth is the spool's depth in events.
	MetricSpoolDepth = "domainevents.spool.depth"
	// MetricOutboxBacklog is the number of unpublished outbox rows.
	MetricOutboxBacklog = "domainevents.outbox.backlog"
	// MetricOutboxLag is the age of the oldest unpublished outbox row.
	MetricOutboxLag = "domainevents.outbox.lag"
	// MetricInboxDuplicates counts deliveries a consumer's inbox skipped.
	MetricInboxDuplicates = "domainevents.inbox.duplicates"
)

// NewObserver returns a broker.Observer that turns what the library's parts
// report into metrics. Give it to domainevents.WithObserver (every part of
// Open and OpenSubscriber), or to each part's WithObserver (the outbox
// relay's, say):
//
//	obs := domaineventsotel.NewObserver()
//	pub, err := domainevents.Open(ctx, cfg, domainevents.WithObserver(obs))
//
// The metrics (each with domainevents.component, the part reporting:
// "retry", "spool", "rabbitmq publisher", "kafka subscriber", "outbox
// relay"...; messaging.system when the part has one; and
// domainevents.destination, the queue, topic, dead-letter sink or spool
// directory concerned, when there is one):
//
//   - domainevents.retries, counter {retry}: a publish attempt failed and
//     will be retried, or a delivery's handler failed and it will be
//     handled again; with error.type, the failure's category.
//   - domainevents.dead_letters, counter {message}: a message went to a
//     dead-letter sink or queue; with error.type, why.
//   - domainevents.connects, counter {connection}: connections made, the
//     first and each reconnect.
//   - domainevents.disconnects, counter {connection}: connections lost
//     (each is followed by reconnect attempts).
//   - domainevents.spool.depth, gauge {message}: the events in the local
//     spool, waiting to be replayed.
//   - domainevents.outbox.backlog, gauge {row}: the outbox rows not yet
//     published.
//   - domainevents.outbox.lag, gauge s: the age of the oldest unpublished
//     outbox row.
//   - domainevents.inbox.duplicates, counter {message}: deliveries a
//     consumer's inbox (outbox.Inbox, given outbox.WithInboxObserver, or
//     domainevents.WithInbox with WithObserver) skipped because their event
//     id was handled before: redeliveries, at least once.
//
// Observe is safe for concurrent use, does not block and allocates only the
// first time it sees a combination of attributes. Only WithMeterProvider
// applies.
func NewObserver(opts ...Option) broker.Observer {
	c := newConfig(opts)
	m := c.meter()
	o := &observer{
		retries: instrument(m.Int64Counter(MetricRetries, metric.WithUnit("{retry}"),
			metric.WithDescription("Publish attempts that failed and will be retried, and deliveries whose handler failed and will be handled again.")))(noop.Int64Counter{}),
		deadLetters: instrument(m.Int64Counter(MetricDeadLetters, metric.WithUnit("{message}"),
			metric.WithDescription("Messages that went to a dead-letter sink or queue.")))(noop.Int64Counter{}),
		connects: instrument(m.Int64Counter(MetricConnects, metric.WithUnit("{connection}"),
			metric.WithDescription("Connections to a broker made: the first one and every reconnect.")))(noop.Int64Counter{}),
		disconnects: instrument(m.Int64Counter(MetricDisconnects, metric.WithUnit("{connection}"),
			metric.WithDescription("Connections to a broker lost.")))(noop.Int64Counter{}),
		spoolDepth: instrument(m.Int64Gauge(MetricSpoolDepth, metric.WithUnit("{message}"),
			metric.WithDescription("Events in the local dead-letter spool, waiting to be replayed.")))(noop.Int64Gauge{}),
		backlog: instrument(m.Int64Gauge(MetricOutboxBacklog, metric.WithUnit("{row}"),
			metric.WithDescription("Outbox rows not yet published.")))(noop.Int64Gauge{}),
		duplicates: instrument(m.Int64Counter(MetricInboxDuplicates, metric.WithUnit("{message}"),
			metric.WithDescription("Deliveries a consumer's inbox skipped: their event id was handled before.")))(noop.Int64Counter{}),
		lag: instrument(m.Float64Gauge(MetricOutboxLag, metric.WithUnit("s"),
			metric.WithDescription("Age of the oldest unpublished outbox row.")))(noop.Float64Gauge{}),
	}
	return o
}

type observer struct {
	retries, deadLetters, connects, disconnects metric.Int64Counter
	duplicates                                  metric.Int64Counter
	spoolDepth, backlog                         metric.Int64Gauge
	lag                                         metric.Float64Gauge
	sets                                        cache[obsKey, metric.MeasurementOption]
}

type obsKey struct {
	component, system, dest, errType string
}

func (o *observer) set(k obsKey) metric.MeasurementOption {
	return o.sets.get(k, func() metric.MeasurementOption { return newObsSet(k) })
}

func newObsSet(k obsKey) metric.MeasurementOption {
	kv := make([]attribute.KeyValue, 0, 4)
	if k.component != "" {
		kv = append(kv, attrComponent.String(k.component))
	}
	kv = system(k.system, kv)
	if k.dest != "" {
		kv = append(kv, attrDestination.String(k.dest))
	}
	if k.errType != "" {
		kv = append(kv, semconv.ErrorTypeKey.String(k.errType))
	}
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// Observe records o (see [NewObserver]). Kinds it does not know are
// ignored.
func (o *observer) Observe(ctx context.Context, ob broker.Observation) {
	k := obsKey{component: ob.Component, system: ob.System, dest: ob.Destination}
	switch ob.Kind {
	case broker.ObservedRetry:
		k.errType = category(ob)
		o.retries.Add(ctx, 1, o.set(k))
	case broker.ObservedDeadLetter:
		k.errType = category(ob)
		o.deadLetters.Add(ctx, 1, o.set(k))
	case broker.ObservedConnected:
		o.connects.Add(ctx, 1, o.set(k))
	case broker.ObservedDisconnected:
		o.disconnects.Add(ctx, 1, o.set(k))
	case broker.ObservedSpoolDepth:
		o.spoolDepth.Record(ctx, int64(ob.Value), o.set(k))
	case broker.ObservedOutboxBacklog:
		o.backlog.Record(ctx, int64(ob.Value), o.set(k))
	case broker.ObservedOutboxLag:
		o.lag.Record(ctx, ob.Value, o.set(k))
	case broker.ObservedDuplicate:
		o.duplicates.Add(ctx, 1, o.set(k))
	}
}

// category is the error.type of an observation: its Category, or that of
// its Err, "_OTHER" when neither says.
func category(ob broker.Observation) string {
	switch {
	case ob.Category == broker.CategoryUnknown:
		return semconv.ErrorTypeOther.Value.AsString()
	case ob.Category != "":
		return ob.Category
	case ob.Err != nil:
		return errorType(ob.Err)
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// instrument returns a function that gives the instrument made, or
// fallback when the provider refused to make it: the error goes to
// otel.Handle, as OpenTelemetry instrumentations do (instrumentation never
// breaks the code it observes).
func instrument[T any](inst T, err error) func(fallback T) T {
	return func(fallback T) T {
		if err != nil {
			otel.Handle(err)
			return fallback
		}
		return inst
	}
}
