package rabbitmq_test

import (
	"context"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// A raw amqp091 consumer sees the documented CloudEvents headers (binary
// content mode, the AMQP binding's "cloudEvents:" prefix) beside this
// library's own properties and headers, which stay as they were; the
// source comes from the option or from Config.CloudEventsSource.
func TestCloudEventsHeadersOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source string
		cfg    bool // through Config.CloudEventsSource instead of WithCloudEvents
	}{
		{"option", "/orders-service", false},
		{"config", "urn:example:orders", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var b *rabbitmq.Broker
			if tc.cfg {
				cfg := f.config(rabbitAddr())
				cfg.CloudEventsSource = tc.source
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var err error
				b, err = rabbitmq.New(ctx, cfg, rabbitmq.WithQueue(rabbitmq.Queue{Name: f.queue}), rabbitmq.WithLogger(testLogger(t)))
				require.NoError(t, err)
				t.Cleanup(func() { _ = b.Close(context.Background()) })
			} else {
				b = f.open(t, rabbitAddr(), rabbitmq.WithCloudEvents(tc.source))
			}
			m := brokertest.NewMessage("order.created")
			m.Time = time.Date(2026, 11, 30, 10, 15, 30, 123_000_000, time.UTC)
			m.Headers = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, b.Publish(ctx, m))

			got, _, err := f.drain(ctx, t, []string{m.ID})
			require.NoError(t, err)
			d := got[m.ID]
			h := d.Headers
			assert.Equal(t, m.ID, h["cloudEvents:id"])
			assert.Equal(t, tc.source, h["cloudEvents:source"])
			assert.Equal(t, "1.0", h["cloudEvents:specversion"])
			assert.Equal(t, "order.created", h["cloudEvents:type"])
			assert.Equal(t, "2026-11-30T10:15:30.123Z", h["cloudEvents:time"])
			assert.Equal(t, m.Key, h["cloudEvents:partitionkey"])
			// This library's wire contract, unchanged.
			assert.Equal(t, broker.ContentTypeJSON, d.ContentType, "content_type: the data's media type")
			assert.Equal(t, m.ID, d.MessageId)
			assert.Equal(t, "order.created", d.Type)
			assert.Equal(t, m.Key, h[broker.HeaderKey])
			assert.Equal(t, m.Headers["traceparent"], h["traceparent"])
			assert.Equal(t, m.Body, d.Body, "the body is the data, unchanged")
			assert.Len(t, h, 8, "six attributes, event-key, traceparent: %v", h)
		})
	}
}

// Without a source nothing changes on the wire.
func TestCloudEventsOffByDefault(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	m := brokertest.NewMessage("order.created")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, m))
	got, _, err := f.drain(ctx, t, []string{m.ID})
	require.NoError(t, err)
	assert.Equal(t, amqp.Table{broker.HeaderKey: m.Key}, got[m.ID].Headers)
}

func TestWithCloudEventsRejectsABadSource(t *testing.T) {
	for _, src := range []string{"", "%zz"} {
		_, err := rabbitmq.New(context.Background(), broker.DefaultConfig(), rabbitmq.WithCloudEvents(src), rabbitmq.WithLazyConnect())
		require.Error(t, err, "source %q", src)
		assert.ErrorIs(t, err, broker.ErrInvalid)
		assert.ErrorIs(t, err, broker.ErrCloudEventsSource)
		assert.Contains(t, err.Error(), "WithCloudEvents")
	}
}

// The subscriber reads CloudEvents published by others, under each of the
// three prefixes in use on RabbitMQ, with no message_id or type property:
// the attributes fill the delivery.
func TestCloudEventsConsumedFromOtherProducers(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	got := map[string]broker.Delivery{}
	f.subscribe(t, rabbitAddr(), func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got[d.ID] = d
		return nil
	})
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	when := time.Date(2026, 12, 1, 8, 0, 0, 500_000_000, time.UTC)
	cases := []struct {
		prefix string
		time   any // a string, or an AMQP timestamp as the AMQP binding allows
	}{
		{"cloudEvents:", when.Format(time.RFC3339Nano)},
		{"cloudEvents_", when.Format(time.RFC3339Nano)},
		{"ce-", when.Format(time.RFC3339Nano)},
		{"cloudEvents:", when.Truncate(time.Second)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, c := range cases {
		id := "ce-" + string(rune('a'+i))
		err := ch.PublishWithContext(ctx, f.exchange, "payments", false, false, amqp.Publishing{
			ContentType: "application/json",
			Body:        []byte(`{"amount":"12.50"}`),
			Headers: amqp.Table{
				c.prefix + "specversion":  "1.0",
				c.prefix + "id":           id,
				c.prefix + "source":       "/payments",
				c.prefix + "type":         "payment.captured",
				c.prefix + "time":         c.time,
				c.prefix + "partitionkey": "order-" + id,
				c.prefix + "subject":      "order-" + id,
			},
		})
		require.NoError(t, err)
	}
	brokertest.WaitFor(t, 15*time.Second, "the four CloudEvents", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(cases)
	})
	mu.Lock()
	defer mu.Unlock()
	for i, c := range cases {
		id := "ce-" + string(rune('a'+i))
		d, ok := got[id]
		if !assert.True(t, ok, "%s: no delivery with id %s: %v", c.prefix, id, got) {
			continue
		}
		assert.Equal(t, "payment.captured", d.Name, c.prefix)
		assert.Equal(t, "order-"+id, d.Key, c.prefix)
		assert.Equal(t, "application/json", d.ContentType, c.prefix)
		want := when
		if _, ok := c.time.(time.Time); ok {
			want = when.Truncate(time.Second)
		}
		assert.True(t, want.Equal(d.Time), "%s: time %v, want %v", c.prefix, d.Time, want)
		assert.Equal(t, "/payments", d.Headers[c.prefix+"source"], "%s: the other attributes stay in Headers", c.prefix)
		assert.Equal(t, "order-"+id, d.Headers[c.prefix+"subject"], c.prefix)
		assert.JSONEq(t, `{"amount":"12.50"}`, string(d.Body), c.prefix)
	}
}
