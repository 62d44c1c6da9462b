package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func requireRabbit(t *testing.T) *amqp.Connection { return rabbittest.RequireRabbit(t) }

// rabbitEnv points the example at a fresh exchange and queue.
func rabbitEnv(t *testing.T) (admin *amqp.Connection, queue string) {
	admin = requireRabbit(t)
	exchange := "det.own." + strconv.FormatInt(time.Now().UnixNano(), 36)
	queue = exchange + ".q"
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{queue, queue + ".retry", queue + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "rabbitmq")
	t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)
	t.Setenv("EXAMPLE_QUEUE", queue)
	return admin, queue
}

// kafkaEnv points the example at an in-process Kafka-protocol cluster.
func kafkaEnv(t *testing.T) *kfake.Cluster {
	c, err := kfake.NewCluster(kfake.SeedTopics(3, "payments.events", "payments.events.dlq"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	host, port, err := net.SplitHostPort(c.ListenAddrs()[0])
	require.NoError(t, err)
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "kafka")
	t.Setenv("MESSAGE_BROKER_HOST", host)
	t.Setenv("MESSAGE_BROKER_PORT", port)
	return c
}

func checkOutput(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	joined := strings.Join(lines, "\n")
	assert.Contains(t, joined, "payment.captured")
	assert.Contains(t, joined, "amount=125.50")
	assert.Contains(t, joined, "shipment.dispatched")
	assert.Contains(t, joined, "carrier=DHL")
}

// The service's own event types travel through the bridge and the broker
// and come back as the typed values, on RabbitMQ and on Kafka.
func TestOwnEventsRoundTripRabbitMQ(t *testing.T) {
	rabbitEnv(t)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), quiet(), &out))
	checkOutput(t, out.String())
}

func TestOwnEventsRoundTripKafka(t *testing.T) {
	kafkaEnv(t)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), quiet(), &out))
	checkOutput(t, out.String())
}

// A body whose event name the consumer's registry does not know is poison:
// the subscriber dead-letters it at once (category "invalid") and goes on.
func TestUnknownEventIsDeadLetteredRabbitMQ(t *testing.T) {
	admin, queue := rabbitEnv(t)
	pub, sub := consumeOwn(t)
	publishRaw(t, pub, "payment.refunded") // matches payment.#, unknown to Registry
	publishOwn(t, pub)
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	var d amqp.Delivery
	require.Eventually(t, func() bool {
		var ok bool
		d, ok, err = ch.Get(queue+".dlq", true)
		return err == nil && ok
	}, 10*time.Second, 10*time.Millisecond, "the unknown event in %s.dlq", queue)
	assert.Equal(t, "payment.refunded", d.Type)
	assert.Equal(t, broker.CategoryInvalid, d.Headers[broker.HeaderDeadLetterCategory])
	assert.Contains(t, d.Headers[broker.HeaderDeadLetterReason], "unknown event name")
	sub.waitFor(t, "payment.captured")
}

func TestUnknownEventIsDeadLetteredKafka(t *testing.T) {
	c := kafkaEnv(t)
	pub, sub := consumeOwn(t)
	publishRaw(t, pub, "payment.refunded")
	publishOwn(t, pub)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("payments.events.dlq"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var rec *kgo.Record
	for rec == nil && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { rec = r })
	}
	require.NotNil(t, rec, "the unknown event in payments.events.dlq")
	h := map[string]string{}
	for _, hd := range rec.Headers {
		h[hd.Key] = string(hd.Value)
	}
	assert.Equal(t, "payment.refunded", h["event-name"])
	assert.Equal(t, broker.CategoryInvalid, h[broker.HeaderDeadLetterCategory])
	sub.waitFor(t, "payment.captured")
}

// received collects the names of the typed events a bus handler got.
type received chan string

func (r received) waitFor(t *testing.T, name string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case got := <-r:
			if got == name {
				return
			}
		case <-deadline:
			t.Fatalf("%s never reached its typed handler", name)
		}
	}
}

// consumeOwn starts the example's publisher and subscriber, with typed
// handlers that report what they got.
func consumeOwn(t *testing.T) (broker.Broker, received) {
	t.Helper()
	got := make(received, 10)
	bus := eventbus.New()
	eventbus.Subscribe(bus, func(_ context.Context, e PaymentCaptured) error { got <- e.EventName(); return nil })
	eventbus.Subscribe(bus, func(_ context.Context, e ShipmentDispatched) error { got <- e.EventName(); return nil })
	h, err := bridge.NewHandler(bus, bridge.WithRegistry(Registry()))
	require.NoError(t, err)
	cfg, err := broker.ConfigFromEnv()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pub, sub, err := connect(ctx, cfg, h, quiet())
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, sub.Close(ctx))
		assert.NoError(t, pub.Close(ctx))
	})
	return pub, got
}

// publishRaw publishes a well-formed envelope whose name no registry of
// this service knows.
func publishRaw(t *testing.T, b broker.Broker, name string) {
	t.Helper()
	body := `{"name":"` + name + `","id":"e-raw","timestamp":"2026-11-30T10:00:00.000Z","data":{"orderId":"o-1"}}`
	m := broker.Message{ID: "e-raw", Name: name, Key: "o-1", Body: []byte(body), ContentType: broker.ContentTypeJSON}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, m))
}

func publishOwn(t *testing.T, b broker.Broker) {
	t.Helper()
	fwd, err := bridge.NewForwarder(b)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fwd.Forward(ctx, PaymentCaptured{PaymentID: "p-1", OrderID: "o-1", Amount: events.Cents(100)}))
}
