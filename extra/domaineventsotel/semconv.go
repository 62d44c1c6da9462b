package domaineventsotel

import (
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/domainevents/domainevents/broker"
)

// Version is this module's version, recorded as the instrumentation scope
// version.
const Version = "0.1.0"

// SemconvVersion is the version of the OpenTelemetry semantic conventions
// whose names this package emits (go.opentelemetry.io/otel/semconv/v1.43.0).
const SemconvVersion = "1.43.0"

const schemaURL = semconv.SchemaURL

// Operation names and types of the spans and metrics.
const (
	opSend    = "send"
	opProcess = "process"
)

// durationBuckets are the explicit bucket boundaries, in seconds, the
// messaging conventions give for messaging.client.operation.duration and
// messaging.process.duration.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Our own attribute keys, under the domainevents namespace.
const (
	// attrComponent names the part that reported an observation
	// (broker.Observation.Component).
	attrComponent = attribute.Key("domainevents.component")
	// attrDestination is where an observation happened: the queue a
	// failed delivery went to, the dead-letter sink, the spool directory
	// (broker.Observation.Destination).
	attrDestination = attribute.Key("domainevents.destination")
	// attrAttempt is the delivery attempt of a process span
	// (broker.Delivery.Attempt), set when it is not the first.
	attrAttempt = attribute.Key("domainevents.delivery.attempt")
)

// errorType is the error.type of err: its broker category ("unavailable",
// "unroutable", "deadline_exceeded", ...), or "_OTHER" for an error of no
// category. "" for nil.
func errorType(err error) string {
	c := broker.Category(err)
	if c == broker.CategoryUnknown {
		return semconv.ErrorTypeOther.Value.AsString()
	}
	return c
}

// sendDestination is messaging.destination.name for a send: the topic on
// Kafka; on RabbitMQ "{exchange}:{routing key}", only the one that is not
// empty, or "amq.default" when both are (semconv 1.43 RabbitMQ, producer
// side).
func sendDestination(d broker.Destination) string {
	if d.System != "rabbitmq" {
		return d.Name
	}
	return rabbitName(d.Name, d.RoutingKey, "")
}

// processDestination is messaging.destination.name for a delivery: the
// topic on Kafka; on RabbitMQ "{exchange}:{routing key}:{queue}", leaving
// out the empty ones and the queue when it equals the routing key (semconv
// 1.43 RabbitMQ, consumer side).
func processDestination(o broker.Origin) string {
	if o.System != "rabbitmq" {
		return o.Destination
	}
	q := o.Destination
	if q == o.RoutingKey {
		q = ""
	}
	return rabbitName(o.Exchange, o.RoutingKey, q)
}

func rabbitName(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(p)
	}
	if b.Len() == 0 {
		return "amq.default"
	}
	return b.String()
}

// spanName is "{operation} {destination}", or the operation alone when the
// destination is unknown.
func spanName(op, dest string) string {
	if dest == "" {
		return op
	}
	return op + " " + dest
}

// system is the messaging.system attribute, none when the broker does not
// say (the noop broker, a test double).
func system(s string, attrs []attribute.KeyValue) []attribute.KeyValue {
	if s == "" {
		return attrs
	}
	return append(attrs, semconv.MessagingSystemKey.String(s))
}

func partitionID(p int32) string { return strconv.FormatInt(int64(p), 10) }
