package contract_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/events/contract"
)

// dataSchema is the schema of t under "data", as JSON (numbers as written).
func dataSchema(t *testing.T, typ reflect.Type) map[string]any {
	s, err := contract.EventSchema("x.happened", typ)
	require.NoError(t, err)
	b, err := json.Marshal(s["properties"].(map[string]any)["data"])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func props(t *testing.T, s map[string]any) map[string]any {
	p, ok := s["properties"].(map[string]any)
	require.True(t, ok, "no properties in %v", s)
	return p
}

type Base struct {
	ID      string `json:"id" jsonschema:"required"`
	Shadow  int    `json:"shadow"`
	Private string `json:"-"`
}

type wide struct {
	Base
	*Extra
	Shadow  string            `json:"shadow"` // hides Base.Shadow
	Count   uint16            `json:"count"`
	Ratio   float64           `json:"ratio,omitempty"`
	Big     int64             `json:"big,string"`
	Flag    bool              `json:"flag"`
	At      time.Time         `json:"at"`
	Opt     *time.Time        `json:"opt"`
	Addr    netip.Addr        `json:"addr"` // MarshalText: a string
	Raw     json.RawMessage   `json:"raw"`
	Any     any               `json:"any"`
	Blob    []byte            `json:"blob"`
	Pair    [2]int            `json:"pair"`
	Labels  map[string]string `json:"labels"`
	Status  events.OrderStatus
	Price   *events.Money `json:"price"`
	private int
}

type Extra struct {
	Note string `json:"note"`
}

func (wide) EventName() string      { return "x.happened" }
func (wide) AggregateID() string    { return "" }
func (wide) Validate() error        { return nil }
func (keyed) EventName() string     { return "x.keyed" }
func (e keyed) AggregateID() string { return e.Account }
func (keyed) Validate() error       { return nil }

type keyed struct {
	Other   string `json:"other"`
	Account string `json:"accountId"`
}

func TestReflectionFollowsEncodingJSON(t *testing.T) {
	s := dataSchema(t, reflect.TypeFor[wide]())
	p := props(t, s)
	want := map[string]any{
		"id":     map[string]any{"type": "string"},
		"shadow": map[string]any{"type": "string"},
		"note":   map[string]any{"type": "string"},
		"count":  map[string]any{"type": "integer", "minimum": 0.0},
		"ratio":  map[string]any{"type": "number"},
		"big":    map[string]any{"type": "string"},
		"flag":   map[string]any{"type": "boolean"},
		"at":     map[string]any{"type": "string", "format": "date-time"},
		"opt":    map[string]any{"type": []any{"string", "null"}, "format": "date-time"},
		"addr":   map[string]any{"type": "string"},
		"raw":    map[string]any{},
		"any":    map[string]any{},
		"blob":   map[string]any{"type": []any{"string", "null"}, "contentEncoding": "base64"},
		"pair":   map[string]any{"type": "array", "items": map[string]any{"type": "integer"}, "minItems": 2.0, "maxItems": 2.0},
		"labels": map[string]any{"type": []any{"object", "null"}, "additionalProperties": map[string]any{"type": "string"}},
		"Status": map[string]any{"type": "string", "enum": []any{"created", "in_progress", "cancelled"}},
		"price": map[string]any{"type": []any{"number", "null"}, "minimum": 0.0, "examples": []any{12550.0},
			"description": "An exact amount written with two decimals (12550.00); at most two decimals, never negative."},
	}
	assert.Equal(t, want, p)
	assert.Equal(t, []any{"id"}, s["required"])
}

// The zero value's encoding decides whether a nil slice is null:
// events.OrderCreated writes [] for nil items.
func TestNilSliceFollowsMarshalJSON(t *testing.T) {
	p := props(t, dataSchema(t, reflect.TypeFor[events.OrderCreated]()))
	assert.Equal(t, "array", p["items"].(map[string]any)["type"])
	p = props(t, dataSchema(t, reflect.TypeFor[PaymentCaptured]()))
	assert.Equal(t, []any{"array", "null"}, p["tags"].(map[string]any)["type"])
}

type money struct{ cents int64 }

func (m money) MarshalJSON() ([]byte, error) { return []byte("1.00"), nil }

type reshaped struct {
	A string `json:"a"`
}

func (r reshaped) MarshalJSON() ([]byte, error) { return []byte(`{"b":1}`), nil }

type loop struct {
	Next *loop `json:"next"`
}

type badTag struct {
	A string `json:"a" jsonschema:"requried"`
}

type badMin struct {
	A int `json:"a" jsonschema:"minimum=one"`
}

type badKind struct {
	C chan int `json:"c"`
}

func TestWhatReflectionCannotKnowIsAnError(t *testing.T) {
	cases := []struct {
		typ  reflect.Type
		want string
	}{
		{reflect.TypeFor[struct {
			M money `json:"m"`
		}](), "has its own MarshalJSON: give it a method JSONSchema"},
		{reflect.TypeFor[struct {
			R reshaped `json:"r"`
		}](), `encodes no "a": its MarshalJSON changes its shape`},
		{reflect.TypeFor[loop](), "contains itself"},
		{reflect.TypeFor[badTag](), `.a: jsonschema tag "requried": unknown option`},
		{reflect.TypeFor[badMin](), `minimum "one": want a number`},
		{reflect.TypeFor[badKind](), ".c: chan int (chan) cannot be encoded as JSON"},
	}
	for _, c := range cases {
		t.Run(c.typ.String(), func(t *testing.T) {
			_, err := contract.EventSchema("x.happened", c.typ)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "contract: event x.happened: ")
		})
	}
	_, err := contract.EventSchema("", reflect.TypeFor[wide]())
	require.ErrorContains(t, err, "event name is empty")
}

func TestAsyncAPIServiceErrorsNameTheField(t *testing.T) {
	_, err := contract.AsyncAPI(events.NewRegistry(), contract.Service{Broker: broker.Config{Type: "nats"}})
	require.Error(t, err)
	for _, want := range []string{"Service.Title is empty", "Service.Version is empty", `Service.Broker.Type "nats"`} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = contract.AsyncAPI(&events.Registry{}, contract.Service{Title: "a", Version: "1", Broker: broker.DefaultConfig()})
	require.ErrorContains(t, err, "knows no event")
	_, err = contract.JSONSchemas(&events.Registry{})
	require.ErrorContains(t, err, "knows no event")
}

// asyncDoc is the AsyncAPI document of the order events and keyed.
func asyncDoc(t *testing.T, svc contract.Service) map[string]any {
	reg := events.NewRegistry()
	require.NoError(t, events.Register[keyed](reg))
	svc.Title, svc.Version = "orders-service", "1.0.0"
	b, err := contract.AsyncAPI(reg, svc)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc
}

func path(t *testing.T, v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		require.True(t, ok, "at %q: %v", k, v)
		v = m[k]
	}
	return v
}

// The headers a Kafka consumer sees are the adapter's.
func TestAsyncAPIKafkaHeadersAreTheAdapters(t *testing.T) {
	doc := asyncDoc(t, contract.Service{Broker: broker.Config{Type: broker.Kafka}})
	msg := path(t, doc, "components", "messages", "order.created")
	assert.ElementsMatch(t, []any{kafka.HeaderName, kafka.HeaderID, kafka.HeaderContentType}, path(t, msg, "headers", "required"))
	assert.Equal(t, "order.created", path(t, msg, "headers", "properties", kafka.HeaderName, "const"))
	assert.Equal(t, "The event's aggregate id: data.orderId.", path(t, msg, "bindings", "kafka", "key", "description"))
	assert.Equal(t, "The event's aggregate id: data.accountId.", path(t, doc, "components", "messages", "x.keyed", "bindings", "kafka", "key", "description"))
	channels := path(t, doc, "channels").(map[string]any)
	assert.Len(t, channels, 1, "one topic for every event")
	assert.Len(t, path(t, channels, "orders.events", "messages"), 4)

	doc = asyncDoc(t, contract.Service{Broker: broker.Config{Type: broker.Kafka}, TopicPerEvent: true})
	assert.Len(t, path(t, doc, "channels"), 4, "a topic per event")
	assert.Equal(t, "order.created", path(t, doc, "channels", "order.created", "address"))
}

func TestAsyncAPIRabbitMQChannelsAreRoutingKeys(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Exchange = "shop.events"
	doc := asyncDoc(t, contract.Service{Broker: cfg, Servers: []string{"rabbit-1:5672"}})
	channels := path(t, doc, "channels").(map[string]any)
	assert.Len(t, channels, 4)
	ch := path(t, channels, "order.status.updated")
	assert.Equal(t, "order.status.updated", path(t, ch, "address"))
	assert.Equal(t, "routingKey", path(t, ch, "bindings", "amqp", "is"))
	assert.Equal(t, "shop.events", path(t, ch, "bindings", "amqp", "exchange", "name"))
	assert.Equal(t, "topic", path(t, ch, "bindings", "amqp", "exchange", "type"))
	msg := path(t, doc, "components", "messages", "order.status.updated")
	assert.Equal(t, "order.status.updated", path(t, msg, "bindings", "amqp", "messageType"))
	assert.Equal(t, 2.0, path(t, msg, "x-amqp-properties", "delivery_mode"))
	assert.Equal(t, 2.0, path(t, doc, "operations", "send.order.status.updated", "bindings", "amqp", "deliveryMode"))
	assert.Equal(t, "amqp", path(t, doc, "servers", "server-1", "protocol"))
	assert.Equal(t, "rabbit-1:5672", path(t, doc, "servers", "server-1", "host"))
	// The payload is the envelope schema, without a dialect of its own.
	schema := path(t, doc, "components", "schemas", "order.status.updated").(map[string]any)
	assert.NotContains(t, schema, "$schema")
	assert.Equal(t, "order.status.updated", path(t, schema, "properties", "name", "const"))
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	files, err := contract.JSONSchemas(events.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, contract.WriteFiles(dir, files...))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name))
		require.NoError(t, err)
		assert.Equal(t, f.Data, b)
	}
	require.ErrorContains(t, contract.WriteFiles(dir, contract.File{Name: "../x.json"}), "want a plain file name")
}
