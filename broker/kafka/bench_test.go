package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
)

// A ~300-byte order event body.
var benchBody = []byte(`{"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.123Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}`)

// BenchmarkPublish compares our Publish with a raw sarama AsyncProducer with
// the same durability settings (acks=all, idempotent, murmur2), against the
// same in-process kfake cluster (storage off, so the broker is not the
// bottleneck), in the same run. The raw contender does the least a caller
// needs to learn each record's outcome (the record's Metadata carries a
// channel the success/error loop answers on), with the same record shape:
// key, value and the three headers of the wire contract.
func BenchmarkPublish(b *testing.B) {
	c, err := kfake.NewCluster(kfake.SeedTopics(3, "orders.events"), kfake.BlackholeProduce())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cfg := broker.DefaultConfig()
	cfg.Type = broker.Kafka
	cfg.Addresses = c.ListenAddrs()
	ctx := context.Background()
	for _, p := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("ours/publishers=%d", p), func(b *testing.B) {
			ours, err := kafka.New(ctx, cfg, kafka.WithLogger(discardLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer ours.Close(ctx)
			b.ReportAllocs()
			brokertest.Parallel(b, p, func() error {
				id := uuid.NewString()
				return ours.Publish(ctx, broker.Message{ID: id, Name: "order.created", Key: id,
					Body: benchBody, ContentType: broker.ContentTypeJSON})
			})
		})
		b.Run(fmt.Sprintf("raw/publishers=%d", p), func(b *testing.B) {
			sc := sarama.NewConfig()
			sc.Producer.RequiredAcks = sarama.WaitForAll
			sc.Producer.Idempotent = true
			sc.Net.MaxOpenRequests = 1
			sc.Producer.Return.Successes = true
			sc.Producer.Partitioner = sarama.NewMurmur2Partitioner
			prod, err := sarama.NewAsyncProducer(c.ListenAddrs(), sc)
			if err != nil {
				b.Fatal(err)
			}
			var loops sync.WaitGroup
			loops.Go(func() {
				for m := range prod.Successes() {
					m.Metadata.(chan error) <- nil
				}
			})
			loops.Go(func() {
				for e := range prod.Errors() {
					e.Msg.Metadata.(chan error) <- e.Err
				}
			})
			defer func() { prod.AsyncClose(); loops.Wait() }()
			b.ReportAllocs()
			brokertest.Parallel(b, p, func() error {
				id := uuid.NewString()
				res := make(chan error, 1)
				prod.Input() <- &sarama.ProducerMessage{Topic: "orders.events", Key: sarama.StringEncoder(id),
					Value: sarama.ByteEncoder(benchBody), Metadata: res,
					Headers: []sarama.RecordHeader{{Key: []byte("event-name"), Value: []byte("order.created")},
						{Key: []byte("event-id"), Value: []byte(id)}, {Key: []byte("content-type"), Value: []byte(broker.ContentTypeJSON)}}}
				return <-res
			})
		})
	}
}

// BenchmarkConsumeKeyed measures WithConcurrency inside one partition:
// b.N waiting events over 1,000 keys, handled with a no-op and with a
// 2 ms handler (a database write) at 1 and 16 handlers. One op is one
// event; events/s is reported. The window starts with NewSubscriber (the
// group join included) and ends when b.N distinct events were handled.
func BenchmarkConsumeKeyed(b *testing.B) {
	for _, handler := range []struct {
		name string
		d    time.Duration
	}{{"noop", 0}, {"2ms", 2 * time.Millisecond}} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("handler=%s/c=%d", handler.name, n), func(b *testing.B) {
				topic := "bench." + uuid.NewString()[:8]
				c, err := kfake.NewCluster(kfake.SeedTopics(1, topic, topic+".dlq"))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cfg := broker.DefaultConfig()
				cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, c.ListenAddrs(), topic
				ctx := context.Background()
				pub, err := kafka.New(ctx, cfg, kafka.WithLogger(discardLogger()))
				if err != nil {
					b.Fatal(err)
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 64 { // the prefill, not measured
					wg.Go(func() {
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							id := uuid.NewString()
							if err := pub.Publish(ctx, broker.Message{ID: id, Name: "order.created", Key: fmt.Sprintf("order-%d", i%1000),
								Body: benchBody, ContentType: broker.ContentTypeJSON}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				_ = pub.Close(ctx)
				var handled atomic.Int64
				all := make(chan struct{})
				target := int64(b.N)
				b.ResetTimer()
				start := time.Now()
				s, err := kafka.NewSubscriber(ctx, cfg, "bench", func(context.Context, broker.Delivery) error {
					if handler.d > 0 {
						time.Sleep(handler.d)
					}
					if handled.Add(1) == target {
						close(all)
					}
					return nil
				}, kafka.WithLogger(discardLogger()), kafka.WithConcurrency(n))
				if err != nil {
					b.Fatal(err)
				}
				<-all
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
				_ = s.Close(ctx)
			})
		}
	}
}
