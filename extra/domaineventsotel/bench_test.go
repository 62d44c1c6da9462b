package domaineventsotel_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/noop"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// A ~300-byte order event body, as the adapters' benchmarks use.
var benchBody = []byte(`{"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.123Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}`)

// variants are the three ways a broker is benchmarked, side by side in one
// run: bare; wrapped with no-op tracer and meter providers (what an
// application that has not set up OpenTelemetry pays); wrapped with the SDK,
// every span sampled, recorded and handed to a span processor that counts
// it (a recorder that keeps nothing: tracetest.SpanRecorder would keep
// millions of spans and measure the garbage collector), metrics aggregated
// for a manual reader. What a real exporter adds (batching, encoding, the
// network) is not measured.
var variants = []struct {
	name string
	wrap func(b *testing.B, next broker.Broker) broker.Broker
}{
	{"none", func(_ *testing.B, next broker.Broker) broker.Broker { return next }},
	{"noop", func(_ *testing.B, next broker.Broker) broker.Broker {
		return domaineventsotel.WrapBroker(next, domaineventsotel.WithTracerProvider(tracenoop.NewTracerProvider()),
			domaineventsotel.WithMeterProvider(metricnoop.NewMeterProvider()),
			domaineventsotel.WithPropagators(propagation.TraceContext{}))
	}},
	{"sdk", func(b *testing.B, next broker.Broker) broker.Broker {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(&countingProcessor{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		})
		return domaineventsotel.WrapBroker(next, domaineventsotel.WithTracerProvider(tp),
			domaineventsotel.WithMeterProvider(mp), domaineventsotel.WithPropagators(propagation.TraceContext{}))
	}},
}

func benchMessage() broker.Message {
	id := uuid.NewString()
	return broker.Message{ID: id, Name: "order.created", Key: id, Body: benchBody, ContentType: broker.ContentTypeJSON}
}

// BenchmarkPublishRabbitMQ: Publish on the real RabbitMQ (confirms,
// persistent messages, a queue bound), bare against instrumented, 1 and
// 256 publishers. Run it on a quiet machine, several rounds, and compare
// with benchstat:
//
//	go test -run '^$' -bench PublishRabbitMQ -benchtime 5s -count 6 . | tee rabbit.txt
func BenchmarkPublishRabbitMQ(b *testing.B) {
	admin, addr := requireRabbitB(b)
	exchange := "det.otel.bench." + uuid.NewString()[:8]
	b.Cleanup(func() {
		if ch, err := admin.Channel(); err == nil {
			_, _ = ch.QueueDelete(exchange+".q", false, false, false)
			_ = ch.ExchangeDelete(exchange, false, false)
			_ = ch.Close()
		}
	})
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Addresses, cfg.Exchange = true, []string{addr}, exchange
	ctx := context.Background()
	for _, p := range []int{1, 256} {
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/publishers=%d", v.name, p), func(b *testing.B) {
				a, err := rabbitmq.New(ctx, cfg, rabbitmq.WithQueue(rabbitmq.Queue{Name: exchange + ".q"}), rabbitmq.WithLogger(quiet()))
				if err != nil {
					b.Fatal(err)
				}
				pub := v.wrap(b, a)
				defer func() {
					_ = pub.Close(ctx)
					if ch, err := admin.Channel(); err == nil {
						_, _ = ch.QueuePurge(exchange+".q", false)
						_ = ch.Close()
					}
				}()
				b.ReportAllocs()
				brokertest.Parallel(b, p, func() error { return pub.Publish(ctx, benchMessage()) })
			})
		}
	}
}

// BenchmarkPublishKafka: the same on the in-process kfake cluster (storage
// off, as the adapter's own benchmark), acks=all and idempotent.
//
//	go test -run '^$' -bench PublishKafka -benchtime 5s -count 6 . | tee kafka.txt
func BenchmarkPublishKafka(b *testing.B) {
	c, err := kfake.NewCluster(kfake.SeedTopics(3, "orders.events"), kfake.BlackholeProduce())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Type, cfg.Addresses = true, broker.Kafka, c.ListenAddrs()
	ctx := context.Background()
	for _, p := range []int{1, 256} {
		for _, v := range variants {
			b.Run(fmt.Sprintf("%s/publishers=%d", v.name, p), func(b *testing.B) {
				a, err := kafka.New(ctx, cfg, kafka.WithLogger(quiet()))
				if err != nil {
					b.Fatal(err)
				}
				pub := v.wrap(b, a)
				defer pub.Close(ctx)
				b.ReportAllocs()
				brokertest.Parallel(b, p, func() error { return pub.Publish(ctx, benchMessage()) })
			})
		}
	}
}

// BenchmarkWrapper: the wrapper alone, around a broker that does nothing
// (broker/noop, described as RabbitMQ): the absolute cost per Publish in
// ns and allocations, without a network to hide it.
//
//	go test -run '^$' -bench Wrapper -benchmem .
func BenchmarkWrapper(b *testing.B) {
	ctx := context.Background()
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			pub := v.wrap(b, describedNoop{noop.New()})
			msg := benchMessage()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := pub.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type describedNoop struct{ *noop.Broker }

func (describedNoop) Describe(m broker.Message) broker.Destination {
	return broker.Destination{System: "rabbitmq", Name: "orders.events", RoutingKey: m.Name}
}

func requireRabbitB(b *testing.B) (*amqp.Connection, string) {
	addr := "127.0.0.1:5672"
	admin, err := amqp.DialConfig("amqp://guest:guest@"+addr+"/", amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		b.Skipf("RabbitMQ is not reachable on %s (%v); start it with `rabbitmq-server -detached`", addr, err)
	}
	b.Cleanup(func() { _ = admin.Close() })
	return admin, addr
}

// countingProcessor is a span processor that counts the spans that end.
type countingProcessor struct{ ended atomic.Int64 }

func (*countingProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (p *countingProcessor) OnEnd(sdktrace.ReadOnlySpan)                   { p.ended.Add(1) }
func (*countingProcessor) Shutdown(context.Context) error                  { return nil }
func (*countingProcessor) ForceFlush(context.Context) error                { return nil }
