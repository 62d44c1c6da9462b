package rabbitmq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// A ~300-byte order event body.
var benchBody = []byte(`{"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.123Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}`)

// BenchmarkPublish compares our Publish with raw amqp091-go, same broker,
// same run: "raw" is one confirm-mode channel where every goroutine publishes
// and waits for its own deferred confirm (a pipeline as deep as the number of
// goroutines), the fastest safe use of the raw client.
func BenchmarkPublish(b *testing.B) {
	f := newFixture(b)
	purge := func() {
		ch, err := f.admin.Channel()
		if err == nil {
			_, _ = ch.QueuePurge(f.queue, false)
			_ = ch.Close()
		}
	}
	ctx := context.Background()
	for _, p := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("ours/publishers=%d", p), func(b *testing.B) {
			ours := f.open(b, rabbitAddr(), rabbitmq.WithLogger(discardLogger()))
			defer purge()
			b.ReportAllocs()
			brokertest.Parallel(b, p, func() error {
				return ours.Publish(ctx, broker.Message{ID: uuid.NewString(), Name: "order.created",
					Key: "o-1", Body: benchBody, ContentType: broker.ContentTypeJSON})
			})
		})
		b.Run(fmt.Sprintf("raw/publishers=%d", p), func(b *testing.B) {
			ch := rawChannel(b, f)
			defer purge()
			b.ReportAllocs()
			brokertest.Parallel(b, p, func() error {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, f.exchange, "order.created", true, false, amqp.Publishing{
					ContentType: broker.ContentTypeJSON, DeliveryMode: amqp.Persistent, MessageId: uuid.NewString(),
					Type: "order.created", Timestamp: time.Now(), Body: benchBody})
				if err != nil {
					return err
				}
				ok, err := dc.WaitContext(ctx)
				if err == nil && !ok {
					err = fmt.Errorf("nack")
				}
				return err
			})
		})
	}
}

func rawChannel(b *testing.B, f *fixture) *amqp.Channel {
	conn, err := amqp.Dial("amqp://guest:guest@" + rabbitAddr() + "/")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	// Returns must be drained or the channel blocks; none are expected.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	go func() {
		for r := range returns {
			b.Errorf("unexpected return: %s", r.ReplyText)
		}
	}()
	return ch
}
