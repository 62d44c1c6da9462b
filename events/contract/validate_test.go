package contract_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/events/contract"
)

// The published meta-schemas, vendored in testdata (see testdata/README.md):
// the JSON Schema 2020-12 meta-schema with its vocabularies, and the
// AsyncAPI 3.0.0 schema (a bundle with every definition it refers to).
const (
	metaDir      = "testdata/json-schema-2020-12"
	asyncAPIFile = "testdata/asyncapi-3.0.0/asyncapi.json"
	// vendoredBase replaces https://json-schema.org/ in the vendored
	// meta-schema's ids: the validator refuses to replace its built-in
	// copies, and the test is about the files in testdata.
	vendoredBase = "https://vendored.test/"
)

// registry knows the order events and PaymentCaptured.
func registry(t *testing.T) *events.Registry {
	reg := events.NewRegistry()
	require.NoError(t, events.Register[PaymentCaptured](reg))
	return reg
}

func loadJSON(t *testing.T, path string) any {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	v, err := jsonschema.UnmarshalJSON(f)
	require.NoError(t, err, path)
	return v
}

func parse(t *testing.T, b []byte) any {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	return v
}

// rebase rewrites the json-schema.org ids of a vendored meta-schema.
func rebase(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$id" {
				v[k] = strings.Replace(s, "https://json-schema.org/", vendoredBase, 1)
				continue
			}
			v[k] = rebase(x)
		}
	case []any:
		for i := range v {
			v[i] = rebase(v[i])
		}
	}
	return v
}

// metaSchema compiles the vendored JSON Schema 2020-12 meta-schema.
func metaSchema(t *testing.T) *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	files, err := filepath.Glob(filepath.Join(metaDir, "meta", "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 7, "the seven vocabularies of the 2020-12 meta-schema")
	for _, f := range append(files, filepath.Join(metaDir, "schema.json")) {
		doc := rebase(loadJSON(t, f)).(map[string]any)
		require.NoError(t, c.AddResource(doc["$id"].(string), doc))
	}
	s, err := c.Compile(vendoredBase + "draft/2020-12/schema")
	require.NoError(t, err)
	return s
}

// asyncAPISchema compiles the vendored AsyncAPI 3.0.0 schema.
func asyncAPISchema(t *testing.T) *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	doc := loadJSON(t, asyncAPIFile).(map[string]any)
	require.NoError(t, c.AddResource(doc["$id"].(string), doc))
	s, err := c.Compile(doc["$id"].(string))
	require.NoError(t, err)
	return s
}

// compile compiles a generated schema, asserting formats (uuid,
// date-time) so that the events below are checked for them too.
func compile(t *testing.T, f contract.File) *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	url := "mem:///" + f.Name
	require.NoError(t, c.AddResource(url, parse(t, f.Data)))
	s, err := c.Compile(url)
	require.NoError(t, err, "%s", f.Data)
	return s
}

func TestSchemasValidateAgainstMetaSchema(t *testing.T) {
	meta := metaSchema(t)
	files, err := contract.JSONSchemas(registry(t))
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Event)
		require.NoError(t, meta.Validate(parse(t, f.Data)), "%s:\n%s", f.Name, f.Data)
	}
	require.Equal(t, []string{"order.cancelled", "order.created", "order.status.updated", "payment.captured"}, names)

	// The meta-schema is not a rubber stamp: it refuses a broken schema.
	require.Error(t, meta.Validate(parse(t, []byte(`{"type":"object","required":"orderId"}`))))
	require.Error(t, meta.Validate(parse(t, []byte(`{"type":"money"}`))))
}

func TestAsyncAPIValidatesAgainstItsSchema(t *testing.T) {
	spec := asyncAPISchema(t)
	cases := map[string]contract.Service{
		"rabbitmq":                {Title: "orders-service", Version: "1.0.0", Broker: broker.DefaultConfig()},
		"rabbitmq with servers":   {Title: "orders-service", Version: "1.0.0", Description: "Orders.", Broker: func() broker.Config { c := broker.DefaultConfig(); c.TLS = true; c.VHost = "shop"; return c }(), Servers: []string{"rabbit-1:5671", "rabbit-2:5671"}},
		"kafka":                   {Title: "orders-service", Version: "1.0.0", Broker: broker.Config{Type: broker.Kafka}},
		"kafka topic per event":   {Title: "orders-service", Version: "2.1.0", Broker: broker.Config{Type: broker.Kafka, Topic: "shop"}, TopicPerEvent: true, Servers: []string{"k1:9092"}},
		"kafka with own exchange": {Title: "payments", Version: "0.1.0", Broker: broker.Config{Type: broker.Kafka, Exchange: "ignored"}},
	}
	for name, svc := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := contract.AsyncAPI(registry(t), svc)
			require.NoError(t, err)
			require.NoError(t, spec.Validate(parse(t, b)), "%s", b)
		})
	}
	// Nor is this one: a document without info, or with a send of an
	// unknown action, is refused.
	require.Error(t, spec.Validate(parse(t, []byte(`{"asyncapi":"3.0.0"}`))))
	require.Error(t, spec.Validate(parse(t, []byte(`{"asyncapi":"3.0.0","info":{"title":"x","version":"1"},"operations":{"a":{"action":"publish","channel":{"$ref":"#/channels/c"}}}}`))))
}

// encoded is the wire body of e, with a fixed id and time.
func encoded(t *testing.T, e events.Event) []byte {
	s := events.Stamper{
		NewID: func() string { return "6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33" },
		Now:   func() time.Time { return time.Date(2026, 11, 30, 10, 15, 30, 123e6, time.UTC) },
	}
	b, err := events.Encode(s.Stamp(e))
	require.NoError(t, err)
	return b
}

// edit changes one field of a wire body: path is the keys down to it;
// a nil value deletes it.
func edit(t *testing.T, body []byte, value any, path ...string) []byte {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	require.NoError(t, d.Decode(&m))
	at := m
	for _, k := range path[:len(path)-1] {
		switch next := at[k].(type) {
		case map[string]any:
			at = next
		case []any:
			at = next[0].(map[string]any) // the first item
		}
	}
	if value == nil {
		delete(at, path[len(path)-1])
	} else {
		at[path[len(path)-1]] = value
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestEncodedEventsValidate checks the schemas against the encoder and the
// decoder: what events.Encode writes validates; what breaks the contract
// does not, and events.Decode refuses it too. Two differences are
// deliberate and pinned here: the schema cannot say "two decimals" (see
// events.Money.JSONSchema) and describes the UTC timestamps producers
// write, where the decoder also accepts an offset.
func TestEncodedEventsValidate(t *testing.T) {
	reg := registry(t)
	files, err := contract.JSONSchemas(reg)
	require.NoError(t, err)
	schemas := map[string]*jsonschema.Schema{}
	for _, f := range files {
		schemas[f.Event] = compile(t, f)
	}
	const orderID, userID = "0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e", "a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d"
	created := encoded(t, events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated,
		Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 2, Price: events.Cents(627500)}}, Total: events.Cents(1255000)})
	noItems := encoded(t, events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated})
	updated := encoded(t, events.OrderStatusUpdated{OrderID: orderID, UserID: userID, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress})
	cancelled := encoded(t, events.OrderCancelled{OrderID: orderID, UserID: userID, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled})
	method := "card"
	payment := encoded(t, PaymentCaptured{PaymentID: "pay-1", OrderID: orderID, Amount: events.Cents(12550), Method: &method})
	paymentNil := encoded(t, PaymentCaptured{PaymentID: "pay-1", OrderID: orderID, Amount: events.Cents(1)}) // no method, tags null

	cases := []struct {
		name        string
		event       string
		body        []byte
		schemaOK    bool
		decoderOK   bool
		differences string // why schema and decoder disagree
	}{
		{"order.created", "order.created", created, true, true, ""},
		{"order.created without items", "order.created", noItems, true, true, ""},
		{"order.status.updated", "order.status.updated", updated, true, true, ""},
		{"order.cancelled", "order.cancelled", cancelled, true, true, ""},
		{"own event", "payment.captured", payment, true, true, ""},
		{"own event, null slice, no pointer", "payment.captured", paymentNil, true, true, ""},
		{"own event, id not a uuid", "payment.captured", edit(t, payment, "pay-1", "id"), false, true, "format uuid is asserted here; the decoder takes any id"},

		{"missing orderId", "order.created", edit(t, created, nil, "data", "orderId"), false, false, ""},
		{"empty orderId", "order.created", edit(t, created, "", "data", "orderId"), false, false, ""},
		{"total as a string", "order.created", edit(t, created, "12550.00", "data", "total"), false, false, ""},
		{"negative total", "order.created", edit(t, created, json.Number("-1.00"), "data", "total"), false, false, ""},
		{"price as a string", "order.created", edit(t, created, "62.75", "data", "items", "price"), false, false, ""},
		{"quantity 0", "order.created", edit(t, created, json.Number("0"), "data", "items", "quantity"), false, false, ""},
		{"item without productId", "order.created", edit(t, created, nil, "data", "items", "productId"), false, false, ""},
		{"items missing", "order.created", edit(t, created, nil, "data", "items"), true, true, ""},
		{"unknown status", "order.created", edit(t, created, "shipped", "data", "status"), false, false, ""},
		{"status missing", "order.created", edit(t, created, nil, "data", "status"), false, false, ""},
		{"cancelled with newStatus created", "order.cancelled", edit(t, cancelled, "created", "data", "newStatus"), false, false, ""},
		{"updated without oldStatus", "order.status.updated", edit(t, updated, nil, "data", "oldStatus"), false, false, ""},
		{"missing id", "order.created", edit(t, created, nil, "id"), false, false, ""},
		{"missing data", "order.created", edit(t, created, nil, "data"), false, false, ""},
		{"name of another event", "order.created", edit(t, created, "order.cancelled", "name"), false, false, ""},
		{"timestamp not a time", "order.created", edit(t, created, "yesterday", "timestamp"), false, false, ""},
		{"unknown field", "order.created", edit(t, created, "x", "data", "coupon"), true, true, ""},
		{"own event, amount 0", "payment.captured", edit(t, payment, json.Number("0.00"), "data", "amount"), false, false, ""},
		{"own event, amount missing", "payment.captured", edit(t, payment, nil, "data", "amount"), false, false, ""},

		{"three decimals", "order.created", edit(t, created, json.Number("12550.001"), "data", "total"), true, false, "no portable JSON Schema for two decimals"},
		{"timestamp with an offset", "order.created", edit(t, created, "2026-11-30T11:15:30.123+01:00", "timestamp"), false, true, "producers write UTC; the decoder accepts any RFC 3339"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := schemas[c.event].Validate(parse(t, c.body))
			if c.schemaOK {
				require.NoError(t, err, "%s", c.body)
			} else {
				require.Error(t, err, "%s", c.body)
			}
			_, derr := reg.Decode(c.body)
			if c.decoderOK {
				require.NoError(t, derr, "%s", c.body)
			} else {
				require.Error(t, derr, "%s", c.body)
			}
			require.Equal(t, c.differences != "", c.schemaOK != c.decoderOK, "a difference between schema and decoder must be explained")
		})
	}
}
