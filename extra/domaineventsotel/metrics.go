package domaineventsotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
)

// clientMetrics are the messaging conventions' instruments.
type clientMetrics struct {
	opDuration messagingconv.ClientOperationDuration
	sent       messagingconv.ClientSentMessages
	consumed   messagingconv.ClientConsumedMessages
	process    messagingconv.ProcessDuration
	sets       cache[setKey, attribute.Set]
}

// newClientMetrics makes the instruments. An error (a provider refusing
// one) goes to otel.Handle and leaves a no-op instrument in its place, as
// OpenTelemetry instrumentations do: instrumentation never breaks the code
// it observes.
func newClientMetrics(m metric.Meter) *clientMetrics {
	var c clientMetrics
	var err error
	buckets := metric.WithExplicitBucketBoundaries(durationBuckets...)
	if c.opDuration, err = messagingconv.NewClientOperationDuration(m, buckets); err != nil {
		otel.Handle(err)
	}
	if c.process, err = messagingconv.NewProcessDuration(m, buckets); err != nil {
		otel.Handle(err)
	}
	if c.sent, err = messagingconv.NewClientSentMessages(m); err != nil {
		otel.Handle(err)
	}
	if c.consumed, err = messagingconv.NewClientConsumedMessages(m); err != nil {
		otel.Handle(err)
	}
	return &c
}

// Which metric an attribute set is for: each has its own attribute list.
const (
	setSendDuration = iota
	setSent
	setProcessDuration
	setConsumed
)

// setKey is what a metric's attribute set depends on; every field has low
// cardinality (a handful of destinations, partitions and error types), so
// the sets are built once and reused.
type setKey struct {
	metric    int
	system    string
	dest      string
	group     string
	errType   string
	partition int32 // -1: none
}

// set returns the attribute set of k, built on first use.
func (c *clientMetrics) set(k setKey) attribute.Set {
	return c.sets.get(k, func() attribute.Set { return newSet(k) })
}

func newSet(k setKey) attribute.Set {
	kv := make([]attribute.KeyValue, 0, 8)
	kv = system(k.system, kv)
	switch k.metric {
	case setSendDuration, setSent:
		kv = append(kv, semconv.MessagingOperationNameKey.String(opSend))
		if k.metric == setSendDuration {
			kv = append(kv, semconv.MessagingOperationTypeSend)
		}
	default:
		kv = append(kv, semconv.MessagingOperationNameKey.String(opProcess))
	}
	if k.dest != "" {
		kv = append(kv, semconv.MessagingDestinationName(k.dest))
	}
	if k.group != "" {
		kv = append(kv, semconv.MessagingConsumerGroupName(k.group))
	}
	if k.partition >= 0 {
		kv = append(kv, semconv.MessagingDestinationPartitionID(partitionID(k.partition)))
	}
	if k.errType != "" {
		kv = append(kv, semconv.ErrorTypeKey.String(k.errType))
	}
	return attribute.NewSet(kv...)
}
