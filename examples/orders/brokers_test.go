package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The example publishes its three events to a Kafka-protocol broker; franz-go
// (not sarama) reads them back, keyed by order id, in the partition Kafka's
// Java client would choose (franz-go's StickyKeyPartitioner(nil) is Kafka's
// murmur2 partitioner), in publish order.
func TestRunKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.SeedTopics(6, "orders.events"))
	require.NoError(t, err)
	defer c.Close()
	host, port, err := net.SplitHostPort(c.ListenAddrs()[0])
	require.NoError(t, err)
	t.Setenv("MESSAGE_BROKER_SPOOL_DIR", t.TempDir())
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "kafka")
	t.Setenv("MESSAGE_BROKER_HOST", host)
	t.Setenv("MESSAGE_BROKER_PORT", port)

	require.NoError(t, run(context.Background(), quiet(), io.Discard))

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("orders.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 3 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	require.Len(t, recs, 3)
	java := kgo.StickyKeyPartitioner(nil).ForTopic("orders.events")
	want := []string{events.NameOrderCreated, events.NameOrderStatusUpdated, events.NameOrderCancelled}
	for i, r := range recs {
		env, err := events.Decode(r.Value)
		require.NoError(t, err)
		assert.Equal(t, want[i], env.Name, "in publish order")
		assert.Equal(t, env.Data.AggregateID(), string(r.Key), "keyed by order id")
		assert.Equal(t, int32(java.Partition(r, 6)), r.Partition, "the partition a Java producer picks")
	}
}

// With RabbitMQ the example succeeds on a fresh server: its queue receives
// the three events.
func TestRunRabbitMQ(t *testing.T) {
	admin := rabbittest.RequireRabbit(t)
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	exchange := "det.example." + strconv.FormatInt(time.Now().UnixNano(), 36)
	queue := exchange + ".q"
	t.Setenv("MESSAGE_BROKER_QUEUE", queue)
	t.Cleanup(func() {
		_ = ch.ExchangeDelete(exchange, false, false)
		_, _ = ch.QueueDelete(queue, false, false, false)
	})
	t.Setenv("MESSAGE_BROKER_SPOOL_DIR", t.TempDir())
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "rabbitmq")
	t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)

	require.NoError(t, run(context.Background(), quiet(), io.Discard))
	want := []string{events.NameOrderCreated, events.NameOrderStatusUpdated, events.NameOrderCancelled}
	for i := range 3 {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		require.True(t, ok, "event %d missing from %s", i, queue)
		env, err := events.Decode(d.Body)
		require.NoError(t, err)
		assert.Equal(t, want[i], env.Name, "in publish order")
		assert.Equal(t, uint8(amqp.Persistent), d.DeliveryMode)
	}
}
