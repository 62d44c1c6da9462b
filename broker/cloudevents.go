package broker

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// CloudEvents binary content mode (https://cloudevents.io, spec 1.0): the
// event's attributes travel as message headers, its data as the body. The
// adapters write them when given a source (Config.CloudEventsSource, or
// their WithCloudEvents option) and their subscribers always read them.
// docs/cloudevents.md has the mapping, field by field.

// CloudEventsSpecVersion is the CloudEvents version written in the
// specversion attribute.
const CloudEventsSpecVersion = "1.0"

// Header prefixes of CloudEvents attributes in binary content mode.
const (
	// CloudEventsPrefixKafka is the Kafka protocol binding's, as
	// cloudevents/sdk-go's kafka_sarama binding writes and reads it: the
	// Kafka adapter writes and reads it.
	CloudEventsPrefixKafka = "ce_"
	// CloudEventsPrefixAMQP is the CloudEvents AMQP protocol binding's
	// (application-properties "cloudEvents:id", ...), which RabbitMQ 4
	// hands to AMQP 1.0 consumers of the same queue as application
	// properties: the RabbitMQ adapter writes it.
	CloudEventsPrefixAMQP = "cloudEvents:"
	// CloudEventsPrefixAMQPAlt is the same binding with the separator JMS
	// allows, as the CloudEvents Java SDK's Spring AMQP converter writes
	// it. The RabbitMQ subscriber reads it.
	CloudEventsPrefixAMQPAlt = "cloudEvents_"
	// CloudEventsPrefixHTTP is the HTTP binding's, which Knative's
	// RabbitMQ broker puts in AMQP headers. The RabbitMQ subscriber reads
	// it.
	CloudEventsPrefixHTTP = "ce-"
)

// The attribute names (without a prefix) the adapters write and read.
const (
	CloudEventsID              = "id"
	CloudEventsSource          = "source"
	CloudEventsSpecVersionAttr = "specversion"
	CloudEventsType            = "type"
	CloudEventsTime            = "time"
	// CloudEventsDataContentType is read when the message has no content
	// type of its own; it is never written (the content type travels as
	// the RabbitMQ content_type property and the Kafka content-type
	// header, as the bindings say).
	CloudEventsDataContentType = "datacontenttype"
	// CloudEventsPartitionKey is the Partitioning extension's attribute:
	// Message.Key. sdk-go's Kafka binding makes it the record key.
	CloudEventsPartitionKey = "partitionkey"
)

// ErrCloudEventsSource matches a CloudEvents source that is not a
// non-empty URI-reference.
var ErrCloudEventsSource = errors.New("CloudEvents source must be a non-empty URI-reference, e.g. /orders-service or urn:example:orders")

// CheckCloudEventsSource reports whether source can be a CloudEvents
// source attribute (a non-empty URI-reference): nil, or an error matching
// [ErrCloudEventsSource] and [ErrInvalid]. An empty source is an error
// here; callers that take "" as "off" test for it first.
func CheckCloudEventsSource(source string) error {
	if source == "" {
		return &Error{Op: "broker: CloudEvents source", Kind: ErrInvalid, Err: ErrCloudEventsSource}
	}
	if _, err := url.Parse(source); err != nil {
		return &Error{Op: "broker: CloudEvents source", Kind: ErrInvalid, Err: fmt.Errorf("%q: %w", shownValue(source), ErrCloudEventsSource)}
	}
	return nil
}

// CloudEventsHeaders calls set once for each CloudEvents attribute of m in
// binary content mode, with the header name prefix+attribute: id =
// m.ID, source = source, specversion = [CloudEventsSpecVersion], type =
// m.Name, time = t (m.Time, or the publish time when that is zero) in
// RFC 3339 UTC with nanoseconds as sdk-go writes it, and partitionkey =
// m.Key when there is one. The body and the content type are the
// adapter's: the body is the data, the content type its media type.
//
// It is the one place both adapters build the headers from.
func CloudEventsHeaders(prefix, source string, m Message, t time.Time, set func(name, value string)) {
	set(prefix+CloudEventsID, m.ID)
	set(prefix+CloudEventsSource, source)
	set(prefix+CloudEventsSpecVersionAttr, CloudEventsSpecVersion)
	set(prefix+CloudEventsType, m.Name)
	set(prefix+CloudEventsTime, t.UTC().Format(time.RFC3339Nano))
	if m.Key != "" {
		set(prefix+CloudEventsPartitionKey, m.Key)
	}
}

// WrittenByCloudEventsHeaders reports whether name is one of the headers
// [CloudEventsHeaders] writes with prefix: an adapter drops a message's own
// header of that name (a consumed CloudEvent published again, say) rather
// than send the attribute twice.
func WrittenByCloudEventsHeaders(prefix, name string) bool {
	if len(name) <= len(prefix) || name[:len(prefix)] != prefix {
		return false
	}
	switch name[len(prefix):] {
	case CloudEventsID, CloudEventsSource, CloudEventsSpecVersionAttr, CloudEventsType, CloudEventsTime, CloudEventsPartitionKey:
		return true
	}
	return false
}

// CloudEventsPrefix returns the first of prefixes under which h holds a
// specversion attribute, and whether there is one: whether the message is
// a CloudEvent in binary content mode.
func CloudEventsPrefix(h map[string]string, prefixes ...string) (string, bool) {
	for _, p := range prefixes {
		if _, ok := h[p+CloudEventsSpecVersionAttr]; ok {
			return p, true
		}
	}
	return "", false
}

// IsCloudEvent reports whether h holds a CloudEvents specversion
// attribute under any of the four prefixes: whether a delivery with these
// headers is a CloudEvent in binary content mode, its body the data alone.
func IsCloudEvent(h map[string]string) bool {
	_, ok := CloudEventsPrefix(h, CloudEventsPrefixKafka, CloudEventsPrefixAMQP, CloudEventsPrefixAMQPAlt, CloudEventsPrefixHTTP)
	return ok
}

// FromCloudEvents fills the fields of m that are empty from the
// CloudEvents attributes in m.Headers under the first of prefixes that
// has a specversion, and reports whether it found one: ID from id, Name
// from type, Key from partitionkey, ContentType from datacontenttype.
// Fields already set (by the adapter's own headers and properties, which
// carry the same values when this library published the message) are
// kept. Time is the exception: the time attribute (RFC 3339) replaces it,
// being the event's time to the nanosecond where the AMQP timestamp
// property has whole seconds and a Kafka record's timestamp may be when
// it was produced; a time that does not parse leaves Time as it was. The attribute headers stay in m.Headers, so a
// handler can read the source, the subject and the extensions there.
//
// Subscribers call it on every delivery; a message without the attributes
// costs a map lookup per prefix.
func FromCloudEvents(m *Message, prefixes ...string) bool {
	p, ok := CloudEventsPrefix(m.Headers, prefixes...)
	if !ok {
		return false
	}
	fill := func(dst *string, attr string) {
		if *dst == "" {
			*dst = m.Headers[p+attr]
		}
	}
	fill(&m.ID, CloudEventsID)
	fill(&m.Name, CloudEventsType)
	fill(&m.Key, CloudEventsPartitionKey)
	fill(&m.ContentType, CloudEventsDataContentType)
	if v, ok := m.Headers[p+CloudEventsTime]; ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			m.Time = t
		}
	}
	return true
}
