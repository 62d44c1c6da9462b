package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/events"
)

func TestGoldenRoundTrip(t *testing.T) {
	for _, name := range []string{events.NameOrderCreated, events.NameOrderStatusUpdated, events.NameOrderCancelled} {
		t.Run(name, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join("testdata", name+".json"))
			require.NoError(t, err)
			golden = bytes.TrimSpace(golden)

			env, err := events.Decode(golden)
			require.NoError(t, err)
			assert.Equal(t, name, env.Name)
			assert.Equal(t, name, env.Data.EventName())
			assert.Equal(t, "0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e", env.Data.AggregateID())

			out, err := events.Encode(env)
			require.NoError(t, err)
			assert.Equal(t, string(golden), string(out), "byte-for-byte round trip")
		})
	}
}

func TestDecodeTypedValues(t *testing.T) {
	golden, err := os.ReadFile("testdata/order.created.json")
	require.NoError(t, err)
	env, err := events.Decode(golden)
	require.NoError(t, err)
	oc, ok := env.Data.(events.OrderCreated)
	require.True(t, ok, "Data is %T", env.Data)
	assert.Equal(t, int64(1255000), oc.Total.MinorUnits())
	assert.Equal(t, int64(500000), oc.Items[0].Price.MinorUnits())
	assert.Equal(t, events.StatusCreated, oc.Status)
	assert.Equal(t, time.Date(2026, 11, 30, 10, 15, 30, 123e6, time.UTC), env.Timestamp)
}

func TestStamperInjectsIDAndTime(t *testing.T) {
	s := events.Stamper{
		NewID: func() string { return "id-1" },
		Now:   func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6789012, time.FixedZone("X", 3600)) },
	}
	env := s.Stamp(events.OrderStatusUpdated{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "in_progress"})
	body, err := events.Encode(env)
	require.NoError(t, err)
	assert.Equal(t, `{"name":"order.status.updated","id":"id-1","timestamp":"2026-01-02T02:04:05.006Z","data":{"orderId":"o","userId":"u","oldStatus":"created","newStatus":"in_progress"}}`, string(body))
}

func TestNewGivesFreshUUIDAndUTC(t *testing.T) {
	ev := events.OrderCancelled{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "cancelled"}
	a, b := events.New(ev), events.New(ev)
	assert.NotEqual(t, a.ID, b.ID)
	assert.Len(t, a.ID, 36)
	assert.Equal(t, time.UTC, a.Timestamp.Location())
	assert.WithinDuration(t, time.Now(), a.Timestamp, time.Minute)
}

func TestNilItemsMarshalAsArray(t *testing.T) {
	b, err := json.Marshal(events.OrderCreated{OrderID: "o", UserID: "u", Status: "created"})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"items":[]`)
	assert.Contains(t, string(b), `"total":0.00`)
}

func TestValidation(t *testing.T) {
	okCreated := events.OrderCreated{OrderID: "o", UserID: "u", Status: "created", Total: events.Cents(100),
		Items: []events.OrderItem{{ProductID: "p", Quantity: 1, Price: events.Cents(100)}}}
	tests := []struct {
		name  string
		ev    events.Event
		field string
	}{
		{"missing orderId", events.OrderCreated{UserID: "u", Status: "created"}, "orderId"},
		{"missing userId", events.OrderStatusUpdated{OrderID: "o", OldStatus: "created", NewStatus: "in_progress"}, "userId"},
		{"empty status", events.OrderCreated{OrderID: "o", UserID: "u"}, "status"},
		{"unknown status", events.OrderCreated{OrderID: "o", UserID: "u", Status: "shipped?"}, "status"},
		{"unknown newStatus", events.OrderStatusUpdated{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "lost"}, "newStatus"},
		{"cancel to wrong status", events.OrderCancelled{OrderID: "o", UserID: "u", OldStatus: "created", NewStatus: "in_progress"}, "newStatus"},
		{"negative total", func() events.Event { e := okCreated; e.Total = events.Cents(-1); return e }(), "total"},
		{"negative price", func() events.Event {
			e := okCreated
			e.Items = []events.OrderItem{{ProductID: "p", Quantity: 1, Price: events.Cents(-5)}}
			return e
		}(), "items[0].price"},
		{"zero quantity", func() events.Event {
			e := okCreated
			e.Items = []events.OrderItem{{ProductID: "p", Price: events.Cents(5)}}
			return e
		}(), "items[0].quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Encode(events.New(tt.ev))
			require.Error(t, err)
			assert.ErrorIs(t, err, events.ErrInvalid)
			var ve *events.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tt.field, ve.Field)
			assert.Equal(t, tt.ev.EventName(), ve.Event)
			assert.Contains(t, err.Error(), "data."+tt.field)
		})
	}
	require.NoError(t, okCreated.Validate())
}

func TestDecodeErrors(t *testing.T) {
	const ts = `"timestamp":"2026-11-30T10:00:00.000Z"`
	tests := []struct {
		name    string
		body    string
		kind    error
		mention string
	}{
		{"not json", `{"name":`, events.ErrMalformed, ""},
		{"array", `[]`, events.ErrMalformed, ""},
		{"no name", `{"id":"x",` + ts + `,"data":{}}`, events.ErrMalformed, "name"},
		{"no id", `{"name":"order.created",` + ts + `,"data":{}}`, events.ErrMalformed, "id"},
		{"no data", `{"name":"order.created","id":"x",` + ts + `}`, events.ErrMalformed, "data"},
		{"bad timestamp", `{"name":"order.created","id":"x","timestamp":"yesterday","data":{}}`, events.ErrMalformed, "timestamp"},
		{"zero timestamp (Encode refuses it)", `{"name":"order.cancelled","id":"x","timestamp":"0001-01-01T00:00:00Z",` +
			`"data":{"orderId":"o","userId":"u","oldStatus":"created","newStatus":"cancelled"}}`, events.ErrInvalid, "timestamp"},
		{"unknown name", `{"name":"order.shipped","id":"x",` + ts + `,"data":{}}`, events.ErrUnknownEvent, "order.shipped"},
		{"type mismatch", `{"name":"order.created","id":"x",` + ts + `,"data":{"orderId":42}}`, events.ErrMalformed, "orderId"},
		{"data not object", `{"name":"order.created","id":"x",` + ts + `,"data":"hi"}`, events.ErrMalformed, "data"},
		{"money as string", `{"name":"order.created","id":"x",` + ts + `,"data":{"orderId":"o","userId":"u","status":"created","total":"12.00"}}`, events.ErrMalformed, "total"},
		{"negative money", `{"name":"order.created","id":"x",` + ts + `,"data":{"orderId":"o","userId":"u","status":"created","total":-1.00}}`, events.ErrMalformed, "negative"},
		{"three decimals", `{"name":"order.created","id":"x",` + ts + `,"data":{"orderId":"o","userId":"u","status":"created","total":1.005}}`, events.ErrMalformed, "two decimals"},
		{"invalid event", `{"name":"order.cancelled","id":"x",` + ts + `,"data":{"orderId":"o","userId":"u","oldStatus":"created","newStatus":"created"}}`, events.ErrInvalid, "newStatus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Decode([]byte(tt.body))
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.kind)
			assert.Contains(t, err.Error(), tt.mention)
		})
	}
}

func TestRegistry(t *testing.T) {
	r := &events.Registry{}
	require.NoError(t, events.Register[events.OrderCancelled](r))
	err := events.Register[events.OrderCancelled](r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already registered")

	_, err = r.Decode([]byte(`{"name":"order.created","id":"x","timestamp":"2026-11-30T10:00:00Z","data":{}}`))
	assert.ErrorIs(t, err, events.ErrUnknownEvent)
}

func TestMoney(t *testing.T) {
	for _, tt := range []struct {
		in    string
		cents int64
		out   string
	}{
		{"0", 0, "0.00"}, {"12550", 1255000, "12550.00"}, {"12550.5", 1255050, "12550.50"},
		{"0.07", 7, "0.07"}, {"92233720368547757.99", 9223372036854775799, "92233720368547757.99"},
	} {
		m, err := events.ParseMoney(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.cents, m.MinorUnits(), tt.in)
		assert.Equal(t, tt.out, m.String(), tt.in)
	}
	for _, bad := range []string{"", "abc", "1.", ".5", "1.234", "1e3", "+1", " 1", "99999999999999999999", "1.-5"} {
		_, err := events.ParseMoney(bad)
		assert.Error(t, err, "%q", bad)
	}
	assert.Equal(t, "-0.05", events.Cents(-5).String())
}

func TestDecodeNeverPanicsOnTruncations(t *testing.T) {
	golden, err := os.ReadFile("testdata/order.created.json")
	require.NoError(t, err)
	golden = bytes.TrimSpace(golden)
	for i := range golden {
		_, err := events.Decode(golden[:i])
		if err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
		if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrInvalid) && !errors.Is(err, events.ErrUnknownEvent) {
			t.Fatalf("prefix %d: uncategorised error %v", i, err)
		}
	}
	assert.True(t, strings.HasPrefix(string(golden), "{"))
}
