package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
)

// AsyncAPIVersion is the version of the AsyncAPI documents [AsyncAPI] writes.
const AsyncAPIVersion = "3.0.0"

// The binding versions of the AsyncAPI documents.
const (
	amqpBindingVersion  = "0.3.0"
	kafkaBindingVersion = "0.5.0"
)

// The Kafka record headers every event carries: the same strings as
// kafka.HeaderName, kafka.HeaderID and kafka.HeaderContentType (a test
// keeps them equal; this package does not link the Kafka client).
const (
	kafkaHeaderName        = "event-name"
	kafkaHeaderID          = "event-id"
	kafkaHeaderContentType = "content-type"
)

// Service describes the service whose AsyncAPI document [AsyncAPI] writes:
// who it is and where it publishes.
type Service struct {
	// Title is the service's name (info.title), e.g. "orders-service";
	// required.
	Title string
	// Version is the version of its API (info.version), e.g. "1.4.0";
	// required.
	Version string
	// Description is info.description; optional.
	Description string
	// Broker says where events go: Type (rabbitmq or kafka, required),
	// Exchange and VHost (RabbitMQ), Topic (Kafka), each defaulting as in
	// broker.DefaultConfig. Nothing else of it is read: no address, no
	// credential.
	Broker broker.Config
	// TopicPerEvent: on Kafka, a topic per event name instead of
	// Broker.Topic (kafka.WithTopicPerEvent).
	TopicPerEvent bool
	// Servers are host:port addresses listed as the document's servers;
	// none by default (a contract usually outlives the addresses).
	Servers []string
}

// check reports what is missing, naming the field.
func (s Service) check() error {
	var errs []error
	if s.Title == "" {
		errs = append(errs, errors.New("Service.Title is empty: name the service (info.title)"))
	}
	if s.Version == "" {
		errs = append(errs, errors.New("Service.Version is empty: give the API's version (info.version)"))
	}
	if s.Broker.Type != broker.RabbitMQ && s.Broker.Type != broker.Kafka {
		errs = append(errs, fmt.Errorf("Service.Broker.Type %q: want %q or %q", s.Broker.Type, broker.RabbitMQ, broker.Kafka))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	return nil
}

// AsyncAPI returns the AsyncAPI 3.0.0 document (JSON) of svc publishing
// every event reg knows:
//
//   - channels: on RabbitMQ one per routing key (the event name) on the
//     durable topic exchange Broker.Exchange; on Kafka the topic
//     Broker.Topic carrying every event (or, with TopicPerEvent, one topic
//     per event name);
//   - operations: one "send" per event;
//   - messages: one per event, its payload the envelope ([EventSchema],
//     also under components.schemas), content type application/json, and
//     what the adapters put around it: on RabbitMQ the properties
//     message_id (the envelope id), type (the event name), content_type,
//     timestamp and delivery mode 2 (the amqp bindings and the message's
//     "x-amqp-properties"); on Kafka the record headers event-name,
//     event-id and content-type, and the record key, the aggregate id
//     (the kafka binding). Both may carry the W3C traceparent and
//     tracestate headers (extra/domaineventsotel).
//
// Errors name what is missing in svc or which event cannot be described.
func AsyncAPI(reg *events.Registry, svc Service) ([]byte, error) {
	if err := svc.check(); err != nil {
		return nil, err
	}
	types := reg.Types()
	if len(types) == 0 {
		return nil, errors.New("contract: the registry knows no event")
	}
	names := slices.Sorted(maps.Keys(types))
	keys := componentKeys(names)
	schemas, messages := map[string]any{}, map[string]any{}
	channels, operations := map[string]any{}, map[string]any{}
	for _, name := range names {
		s, err := EventSchema(name, types[name])
		if err != nil {
			return nil, err
		}
		delete(s, "$schema") // an AsyncAPI Schema Object (a superset of draft 07): no dialect of its own
		key := keys[name]
		schemas[key] = s
		messages[key] = message(svc, name, key, aggregateField(types[name]))

		chKey, address := key, name // RabbitMQ: the routing key; Kafka with a topic per event: the topic
		if svc.Broker.Type == broker.Kafka && !svc.TopicPerEvent {
			address = or(svc.Broker.Topic, broker.DefaultDestination)
			chKey = safeKey(address)
		}
		ch, ok := channels[chKey].(map[string]any)
		if !ok {
			ch = channel(svc, address)
			channels[chKey] = ch
		}
		ch["messages"].(map[string]any)[key] = ref("#/components/messages/" + key)
		op := map[string]any{
			"action":   "send",
			"title":    "Publish " + name,
			"summary":  "The service publishes " + name + " after the change it announces.",
			"channel":  ref("#/channels/" + chKey),
			"messages": []any{ref("#/channels/" + chKey + "/messages/" + key)},
		}
		if svc.Broker.Type == broker.RabbitMQ {
			op["bindings"] = map[string]any{"amqp": map[string]any{
				"deliveryMode": 2, "mandatory": true, "timestamp": true, "bindingVersion": amqpBindingVersion,
			}}
		}
		operations["send."+key] = op
	}
	info := map[string]any{"title": svc.Title, "version": svc.Version}
	if svc.Description != "" {
		info["description"] = svc.Description
	}
	doc := map[string]any{
		"asyncapi":           AsyncAPIVersion,
		"info":               info,
		"defaultContentType": broker.ContentTypeJSON,
		"channels":           channels,
		"operations":         operations,
		"components":         map[string]any{"schemas": schemas, "messages": messages},
	}
	if servers := servers(svc); len(servers) > 0 {
		doc["servers"] = servers
	}
	return marshal(doc)
}

// channel is the channel of address: a routing key on the exchange, or a
// topic.
func channel(svc Service, address string) map[string]any {
	ch := map[string]any{"address": address, "messages": map[string]any{}}
	if svc.Broker.Type == broker.RabbitMQ {
		exchange := or(svc.Broker.Exchange, broker.DefaultDestination)
		ch["description"] = "Routing key " + address + " on the durable topic exchange " + exchange + "."
		ch["bindings"] = map[string]any{"amqp": map[string]any{
			"is": "routingKey",
			"exchange": map[string]any{
				"name": exchange, "type": "topic", "durable": true, "autoDelete": false,
				"vhost": or(svc.Broker.VHost, "/"),
			},
			"bindingVersion": amqpBindingVersion,
		}}
		return ch
	}
	ch["description"] = "The Kafka topic " + address + "; records are keyed by the aggregate id, so that one aggregate's events share a partition and keep their order."
	ch["bindings"] = map[string]any{"kafka": map[string]any{"topic": address, "bindingVersion": kafkaBindingVersion}}
	return ch
}

// message is the message of the event name.
func message(svc Service, name, key, aggregate string) map[string]any {
	keyDesc := "The event's aggregate id (its AggregateID)."
	if aggregate != "" {
		keyDesc = "The event's aggregate id: data." + aggregate + "."
	}
	m := map[string]any{
		"name":        name,
		"title":       name,
		"contentType": broker.ContentTypeJSON,
		"payload":     ref("#/components/schemas/" + key),
	}
	trace := map[string]any{
		"traceparent": map[string]any{"type": "string", "description": "W3C trace context of the publish, when the producer is instrumented (extra/domaineventsotel)."},
		"tracestate":  map[string]any{"type": "string", "description": "W3C trace state, with traceparent."},
	}
	if svc.Broker.Type == broker.RabbitMQ {
		m["description"] = "The JSON envelope of " + name + ", published persistent with the AMQP properties message_id = the envelope id " +
			"(the key consumers deduplicate on), type = " + name + " (also the routing key), content_type = application/json, " +
			"timestamp = the envelope's timestamp. RabbitMQ has no record key: the aggregate id is in the payload. " + keyDesc
		m["headers"] = map[string]any{"type": "object", "properties": trace}
		m["bindings"] = map[string]any{"amqp": map[string]any{
			"messageType": name, "bindingVersion": amqpBindingVersion,
		}}
		m["x-amqp-properties"] = map[string]any{
			"message_id":    "the envelope id",
			"type":          name,
			"content_type":  broker.ContentTypeJSON,
			"delivery_mode": 2,
			"timestamp":     "the envelope's timestamp",
		}
		return m
	}
	m["description"] = "The JSON envelope of " + name + " as the record value, with the record headers " + kafkaHeaderName + ", " +
		kafkaHeaderID + " and " + kafkaHeaderContentType + ", keyed by the aggregate id. " + keyDesc
	headers := map[string]any{
		kafkaHeaderName:        map[string]any{"type": "string", "const": name, "description": "The event's name."},
		kafkaHeaderID:          map[string]any{"type": "string", "format": "uuid", "description": "The envelope id: the key consumers deduplicate on."},
		kafkaHeaderContentType: map[string]any{"type": "string", "const": broker.ContentTypeJSON},
	}
	maps.Copy(headers, trace)
	m["headers"] = map[string]any{
		"type":       "object",
		"required":   []any{kafkaHeaderName, kafkaHeaderID, kafkaHeaderContentType},
		"properties": headers,
	}
	m["bindings"] = map[string]any{"kafka": map[string]any{
		"key":            map[string]any{"type": "string", "description": keyDesc},
		"bindingVersion": kafkaBindingVersion,
	}}
	return m
}

// servers lists svc.Servers as AsyncAPI servers, named server-1, ...
func servers(svc Service) map[string]any {
	if len(svc.Servers) == 0 {
		return nil
	}
	protocol := "amqp"
	if svc.Broker.Type == broker.Kafka {
		protocol = "kafka"
		if svc.Broker.TLS {
			protocol = "kafka-secure"
		}
	} else if svc.Broker.TLS {
		protocol = "amqps"
	}
	out := map[string]any{}
	for i, addr := range svc.Servers {
		s := map[string]any{"host": addr, "protocol": protocol}
		if svc.Broker.Type == broker.RabbitMQ {
			s["pathname"] = "/" + strings.TrimPrefix(or(svc.Broker.VHost, "/"), "/")
		}
		out[fmt.Sprintf("server-%d", i+1)] = s
	}
	return out
}

// keyChars are the characters AsyncAPI allows in component and channel
// keys.
var keyChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func safeKey(s string) string { return keyChars.ReplaceAllString(s, "_") }

// componentKeys gives each event name a distinct key AsyncAPI accepts.
func componentKeys(names []string) map[string]string {
	keys, used := map[string]string{}, map[string]bool{}
	for _, n := range names {
		k := safeKey(n)
		for i := 2; used[k]; i++ {
			k = fmt.Sprintf("%s_%d", safeKey(n), i)
		}
		used[k], keys[n] = true, k
	}
	return keys
}

func ref(to string) map[string]any { return map[string]any{"$ref": to} }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// marshal writes v indented, ending with a newline, without HTML escaping.
func marshal(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	return []byte(b.String()), nil
}
