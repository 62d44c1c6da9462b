package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

// putDeadLetters puts two order.created and one order.cancelled dead
// letters into sink and returns their ids in that order.
func putDeadLetters(t *testing.T, sink broker.DeadLetterSink) []string {
	t.Helper()
	var ids []string
	for i, name := range []string{"order.created", "order.created", "order.cancelled"} {
		m := brokertest.NewMessage(name)
		m.Key = "order-1"
		ids = append(ids, m.ID)
		reason := []string{"inventory service down", "inventory service down", "unknown event name"}[i]
		require.NoError(t, sink.Put(context.Background(), broker.DeadLetter{Message: m, Reason: reason, Category: broker.CategoryHandlerFailed,
			Attempts: 5, LastFailure: time.Now()}))
	}
	return ids
}

// dlq list and dlq redrive on RabbitMQ (the publisher's "<exchange>.dlq")
// and on Kafka ("<topic>.dlq").
func TestDLQListAndRedrive(t *testing.T) {
	t.Run("rabbitmq", func(t *testing.T) {
		admin := rabbittest.RequireRabbit(t)
		exchange := "det.domainevents." + uuid.NewString()[:8]
		queue := exchange + ".q"
		t.Cleanup(func() {
			ch, err := admin.Channel()
			if err != nil {
				return
			}
			defer ch.Close()
			for _, q := range []string{queue, exchange + ".dlq"} {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(exchange, false, false)
			_ = ch.ExchangeDelete(exchange+".dlx", false, false)
		})
		t.Setenv("MESSAGE_BROKER_ENABLED", "true")
		t.Setenv("MESSAGE_BROKER_ADDRESSES", rabbittest.Addr())
		t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)
		cfg, err := broker.ConfigFromEnv()
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b, err := rabbitmq.New(ctx, cfg, rabbitmq.WithQueue(rabbitmq.Queue{Name: queue})) // the exchange and a queue for everything
		require.NoError(t, err)
		require.NoError(t, b.Close(ctx))
		sink, err := rabbitmq.NewDeadLetterSink(ctx, cfg)
		require.NoError(t, err)
		ids := putDeadLetters(t, sink)
		require.NoError(t, sink.Close(ctx))

		testDLQ(t, exchange+".dlq", ids, exchange+" order.created", func() []string {
			ch, err := admin.Channel()
			require.NoError(t, err)
			defer ch.Close()
			var got []string
			for {
				d, ok, err := ch.Get(queue, true)
				require.NoError(t, err)
				if !ok {
					return got
				}
				got = append(got, d.MessageId)
			}
		})
	})
	t.Run("kafka", func(t *testing.T) {
		topic := "det.domainevents." + uuid.NewString()[:8]
		c, err := kfake.NewCluster(kfake.SeedTopics(1, topic, topic+".dlq"))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		t.Setenv("MESSAGE_BROKER_ENABLED", "true")
		t.Setenv("MESSAGE_BROKER_TYPE", "kafka")
		t.Setenv("MESSAGE_BROKER_ADDRESSES", strings.Join(c.ListenAddrs(), ","))
		t.Setenv("MESSAGE_BROKER_TOPIC", topic)
		cfg, err := broker.ConfigFromEnv()
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sink, err := kafka.NewDeadLetterSink(ctx, cfg)
		require.NoError(t, err)
		ids := putDeadLetters(t, sink)
		require.NoError(t, sink.Close(ctx))
		var mu sync.Mutex
		var got []string
		h := func(_ context.Context, d broker.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, d.ID)
			return nil
		}
		testDLQ(t, topic+".dlq", ids, topic, func() []string {
			sub, err := kafka.NewSubscriber(ctx, cfg, "check", h)
			require.NoError(t, err)
			brokertest.WaitFor(t, time.Minute, "the moved records consumed", func() bool {
				return sub.Stats().Handled >= 2
			})
			require.NoError(t, sub.Close(ctx))
			mu.Lock()
			defer mu.Unlock()
			return got
		})
	})
}

// testDLQ runs the dlq commands on a dead-letter queue or topic holding
// ids (two order.created, then an order.cancelled); moved returns the ids
// that reached the destination.
func testDLQ(t *testing.T, name string, ids []string, dest string, moved func() []string) {
	out, err := cli(t, "dlq", "list")
	require.NoError(t, err)
	for _, id := range ids {
		assert.Contains(t, out, id)
	}
	assert.Contains(t, out, "-> "+dest)
	assert.Contains(t, out, "inventory service down")
	assert.Contains(t, out, "3 dead letter(s) in "+name)

	out, err = cli(t, "dlq", "redrive", "--name", "order.created", "--dry-run")
	require.NoError(t, err)
	assert.Contains(t, out, "would move 2 of the 3")
	assert.NotContains(t, out, ids[2])

	out, err = cli(t, "dlq", "redrive", "--reason", "INVENTORY")
	require.NoError(t, err)
	assert.Contains(t, out, "moved 2/2 from "+name+" (failed: 0)")
	assert.ElementsMatch(t, ids[:2], moved())

	brokertest.WaitFor(t, time.Minute, "the rest listed", func() bool {
		out, err = cli(t, "dlq", "list", "--dlq", name, "--body")
		return err == nil && strings.Contains(out, "1 dead letter(s)")
	})
	assert.Contains(t, out, ids[2])
	assert.Contains(t, out, "body: {")
}
