package domaineventsotel_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// requireRabbit returns an admin connection to RabbitMQ on 127.0.0.1:5672
// (RABBITMQ_ADDR elsewhere). Without one the test skips, saying how to start
// it; in CI (CI=true) it fails.
func requireRabbit(t *testing.T) (*amqp.Connection, string) {
	t.Helper()
	addr := os.Getenv("RABBITMQ_ADDR")
	if addr == "" {
		addr = "127.0.0.1:5672"
	}
	admin, err := amqp.DialConfig("amqp://guest:guest@"+addr+"/", amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		msg := fmt.Sprintf("RabbitMQ is not reachable on %s (%v); start it with `rabbitmq-server -detached` (or set RABBITMQ_ADDR)", addr, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { _ = admin.Close() })
	return admin, addr
}

// rabbitConfig names a fresh exchange and queue, deleted (with what Open
// and OpenSubscriber declare beside them) when the test ends.
func rabbitConfig(t *testing.T, admin *amqp.Connection, addr string) broker.Config {
	exchange := "det.otel." + uuid.NewString()[:8]
	queue := exchange + ".q"
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{queue, queue + ".retry", queue + ".dlq", exchange + ".dlq", exchange + ".raw"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, e := range []string{exchange, exchange + ".dlx"} {
			_ = ch.ExchangeDelete(e, false, false)
		}
	})
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Type = broker.RabbitMQ
	cfg.Addresses = []string{addr}
	cfg.Exchange = exchange
	cfg.Queue = queue
	cfg.ClientID = "det-otel-" + uuid.NewString()[:8]
	cfg.SpoolDir = t.TempDir()
	return cfg
}

// orderEvents are one order's three events.
func orderEvents() []events.Event {
	order, user := uuid.NewString(), uuid.NewString()
	return []events.Event{
		events.OrderCreated{OrderID: order, UserID: user, Status: events.StatusCreated, Total: events.Cents(12550),
			Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 1, Price: events.Cents(12550)}}},
		events.OrderStatusUpdated{OrderID: order, UserID: user, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress},
		events.OrderCancelled{OrderID: order, UserID: user, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled},
	}
}

// publishOrder opens a publisher for cfg, instrumented as the docs say,
// and forwards one order's events inside one root span, which it returns.
func publishOrder(t *testing.T, tl *tel, cfg broker.Config, opts ...domainevents.PublisherOption) trace.SpanContext {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts = append([]domainevents.PublisherOption{domainevents.WithLogger(quiet()), domainevents.WithWaitForConnection(),
		domainevents.WithPublishMiddleware(domaineventsotel.Middleware(tl.opts()...)),
		domainevents.WithObserver(domaineventsotel.NewObserver(tl.opts()...))}, opts...)
	pub, err := domainevents.Open(ctx, cfg, opts...)
	require.NoError(t, err)
	rctx, root := tl.tp.Tracer("test").Start(ctx, "POST /orders")
	for _, e := range orderEvents() {
		require.NoError(t, pub.Forward(rctx, e))
	}
	root.End()
	require.NoError(t, pub.Close(ctx))
	return root.SpanContext()
}

// consume runs OpenSubscriber with a wrapped handler until n process spans
// ended, and returns them.
func consume(t *testing.T, tl *tel, cfg broker.Config, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var spans []trace.SpanContext
	h := domaineventsotel.WrapHandler(func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		spans = append(spans, trace.SpanContextFromContext(ctx))
		return nil
	}, tl.opts()...)
	sub, err := domainevents.OpenSubscriber(ctx, cfg, h, domainevents.WithLogger(quiet()), domainevents.WithWaitForConnection())
	require.NoError(t, err)
	brokertest.WaitFor(t, 20*time.Second, "the deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(spans) >= n
	})
	require.NoError(t, sub.Close(ctx))
	var out []sdktrace.ReadOnlySpan
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() == trace.SpanKindConsumer {
			out = append(out, s)
		}
	}
	require.Len(t, out, n)
	return out
}

// checkTrace checks the sends and processes of one order: one trace from
// the root span; each process span a child of, and linked to, the send
// span of its message.
func checkTrace(t *testing.T, tl *tel, root trace.SpanContext, procs []sdktrace.ReadOnlySpan, names func(event string) (send, process string)) {
	t.Helper()
	sends := map[string]sdktrace.ReadOnlySpan{} // by message id
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			require.Equal(t, codes.Unset, s.Status().Code, s.Name())
			sends[attrs(s.Attributes())["messaging.message.id"].(string)] = s
		}
	}
	require.Len(t, sends, 3)
	for _, p := range procs {
		a := attrs(p.Attributes())
		send, ok := sends[a["messaging.message.id"].(string)]
		require.True(t, ok, "a send span for message %v", a["messaging.message.id"])
		event, _ := attrs(send.Attributes())["messaging.rabbitmq.destination.routing_key"].(string)
		sendName, processName := names(event)
		assert.Equal(t, sendName, send.Name())
		assert.Equal(t, processName, p.Name())
		assert.Equal(t, root.TraceID(), send.SpanContext().TraceID(), "send %s", send.Name())
		assert.Equal(t, root.SpanID(), send.Parent().SpanID())
		assert.Equal(t, root.TraceID(), p.SpanContext().TraceID(), "process %s: the producer's trace", p.Name())
		assert.Equal(t, send.SpanContext().SpanID(), p.Parent().SpanID())
		require.Len(t, p.Links(), 1)
		assert.Equal(t, send.SpanContext().TraceID(), p.Links()[0].SpanContext.TraceID())
		assert.Equal(t, send.SpanContext().SpanID(), p.Links()[0].SpanContext.SpanID(), "a link to the send span")
		assert.Equal(t, "process", a["messaging.operation.name"])
	}
}

// checkUnits checks the messaging metrics' units and counts.
func checkUnits(t *testing.T, tl *tel, n int64) {
	t.Helper()
	ms := tl.metrics(t)
	for name, unit := range map[string]string{
		"messaging.client.operation.duration": "s", "messaging.process.duration": "s",
		"messaging.client.sent.messages": "{message}", "messaging.client.consumed.messages": "{message}",
		"domainevents.connects": "{connection}",
	} {
		require.Contains(t, ms, name)
		assert.Equal(t, unit, ms[name].Unit, name)
	}
	var sent, consumed int64
	for _, dp := range ms["messaging.client.sent.messages"].Data.(metricdata.Sum[int64]).DataPoints {
		sent += dp.Value
	}
	for _, dp := range ms["messaging.client.consumed.messages"].Data.(metricdata.Sum[int64]).DataPoints {
		consumed += dp.Value
	}
	assert.Equal(t, n, sent)
	assert.Equal(t, n, consumed)
}

func TestRabbitMQTrace(t *testing.T) {
	brokertest.CheckNoLeak(t)
	admin, addr := requireRabbit(t)
	tl := newTel(t)
	cfg := rabbitConfig(t, admin, addr)

	// A consumer that is not ours: a raw amqp091 queue bound to the exchange.
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.ExchangeDeclare(cfg.Exchange, "topic", true, false, false, false, nil))
	raw := cfg.Exchange + ".raw"
	_, err = ch.QueueDeclare(raw, false, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(raw, "#", cfg.Exchange, false, nil))

	root := publishOrder(t, tl, cfg)

	for i := range 3 {
		var d amqp.Delivery
		brokertest.WaitFor(t, 10*time.Second, "a raw delivery", func() bool {
			var ok bool
			d, ok, err = ch.Get(raw, true)
			require.NoError(t, err)
			return ok
		})
		tp, _ := d.Headers["traceparent"].(string)
		m := traceparentRE.FindStringSubmatch(tp)
		require.NotNil(t, m, "delivery %d: traceparent %q in %v", i, tp, d.Headers)
		assert.Equal(t, root.TraceID().String(), m[1], "the raw consumer sees the producer's trace id")
	}

	procs := consume(t, tl, cfg, 3)
	checkTrace(t, tl, root, procs, func(event string) (string, string) {
		return "send " + cfg.Exchange + ":" + event, "process " + cfg.Exchange + ":" + event + ":" + cfg.Queue
	})
	for _, p := range procs {
		a := attrs(p.Attributes())
		assert.Equal(t, "rabbitmq", a["messaging.system"])
		assert.Equal(t, cfg.Exchange+":"+a["messaging.rabbitmq.destination.routing_key"].(string)+":"+cfg.Queue, a["messaging.destination.name"])
	}
	checkUnits(t, tl, 3)
}

// A publish RabbitMQ cannot route fails with error.type "unroutable" on the
// span and the metrics.
func TestRabbitMQFailingPublish(t *testing.T) {
	brokertest.CheckNoLeak(t)
	admin, addr := requireRabbit(t)
	tl := newTel(t)
	cfg := rabbitConfig(t, admin, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(quiet())) // no queue bound: nothing routes
	require.NoError(t, err)
	b := domaineventsotel.WrapBroker(a, tl.opts()...)
	defer b.Close(ctx)

	err = b.Publish(ctx, message())
	require.ErrorIs(t, err, broker.ErrUnroutable)
	s := tl.ended("send " + cfg.Exchange + ":order.created")
	require.Len(t, s, 1)
	assert.Equal(t, "unroutable", attrs(s[0].Attributes())["error.type"])
	assert.Equal(t, codes.Error, s[0].Status().Code)
	dps := tl.metrics(t)["messaging.client.operation.duration"].Data.(metricdata.Histogram[float64]).DataPoints
	require.Len(t, dps, 1)
	assert.Equal(t, "unroutable", setAttrs(dps[0].Attributes)["error.type"])
}

func TestKafkaTrace(t *testing.T) {
	brokertest.CheckNoLeak(t, "go-metrics")
	topic := "det.otel." + uuid.NewString()[:8]
	c, err := kfake.NewCluster(kfake.SeedTopics(3, topic, topic+".dlq"))
	require.NoError(t, err)
	defer c.Close()
	tl := newTel(t)
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Type = broker.Kafka
	cfg.Addresses = c.ListenAddrs()
	cfg.Topic = topic
	cfg.ClientID = "det-otel-" + uuid.NewString()[:8]
	cfg.SpoolDir = t.TempDir()

	root := publishOrder(t, tl, cfg)

	// A consumer that is not ours: franz-go reading the record headers.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	var records []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	for len(records) < 3 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		records = append(records, fs.Records()...)
	}
	cancel()
	cl.Close()
	require.Len(t, records, 3)
	for _, r := range records {
		var tp string
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				tp = string(h.Value)
			}
		}
		m := traceparentRE.FindStringSubmatch(tp)
		require.NotNil(t, m, "traceparent %q", tp)
		assert.Equal(t, root.TraceID().String(), m[1], "the raw consumer sees the producer's trace id")
	}

	procs := consume(t, tl, cfg, 3)
	checkTrace(t, tl, root, procs, func(string) (string, string) { return "send " + topic, "process " + topic })
	orders := map[any]bool{}
	for _, p := range procs {
		a := attrs(p.Attributes())
		assert.Equal(t, "kafka", a["messaging.system"])
		assert.Equal(t, topic, a["messaging.destination.name"])
		assert.Equal(t, cfg.ClientID, a["messaging.consumer.group.name"])
		assert.Contains(t, []any{"0", "1", "2"}, a["messaging.destination.partition.id"])
		assert.Contains(t, a, "messaging.kafka.offset")
		orders[a["messaging.kafka.message.key"]] = true
	}
	assert.Len(t, orders, 1, "one order's events, keyed by its id")
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			assert.Contains(t, attrs(s.Attributes()), "messaging.kafka.message.key")
		}
	}
	checkUnits(t, tl, 3)
}
