package domainevents_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
)

// The async forwarder publishes with 16 workers; one order's events must
// still reach the broker in the order they were forwarded. 10,000 events
// over 100 order ids, read back from the broker: 0 per-key inversions.
const asyncKeys, asyncPerKey = 100, 100

func forwardAsync(t *testing.T, cfg broker.Config) map[string][]int {
	t.Helper()
	pub, err := domainevents.Open(context.Background(), cfg, domainevents.WithLogger(quiet()), domainevents.WithAsync(16, 1024),
		domainevents.WithWaitForConnection())
	require.NoError(t, err)
	sent := map[string][]int{}
	for i := range asyncKeys * asyncPerKey {
		orderID := fmt.Sprintf("o-%03d", i%asyncKeys)
		seq := i / asyncKeys
		// The sequence rides in the user id: what the consumer checks.
		e := events.OrderStatusUpdated{OrderID: orderID, UserID: strconv.Itoa(seq), OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress}
		require.NoError(t, pub.Forward(context.Background(), e))
		sent[orderID] = append(sent[orderID], seq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, pub.Close(ctx))
	st := pub.Status(context.Background()).Forwarder
	require.Equal(t, int64(asyncKeys*asyncPerKey), st.Published, "every event published: %+v", st)
	return sent
}

// inversions counts the order ids whose sequence came out of order.
func inversions(t *testing.T, got map[string][]int) int {
	t.Helper()
	bad := 0
	total := 0
	for _, seqs := range got {
		total += len(seqs)
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				bad++
				break
			}
		}
	}
	assert.Equal(t, asyncKeys*asyncPerKey, total, "every event read back")
	return bad
}

func decodeSeq(t *testing.T, body []byte) (string, int) {
	env, err := events.Decode(body)
	require.NoError(t, err)
	e := env.Data.(events.OrderStatusUpdated)
	seq, err := strconv.Atoi(e.UserID)
	require.NoError(t, err)
	return e.OrderID, seq
}

func TestAsyncKeepsPerKeyOrderRabbitMQ(t *testing.T) {
	admin := requireRabbit(t)
	cfg := rabbitConfig(t, admin, "127.0.0.1:5672")
	forwardAsync(t, cfg)
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	deliveries, err := ch.Consume(cfg.Queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	got := map[string][]int{}
	timeout := time.After(60 * time.Second)
	for n := 0; n < asyncKeys*asyncPerKey; n++ {
		var d amqp.Delivery
		select {
		case d = <-deliveries:
		case <-timeout:
			t.Fatalf("only %d of %d events in the queue", n, asyncKeys*asyncPerKey)
		}
		k, seq := decodeSeq(t, d.Body)
		got[k] = append(got[k], seq)
	}
	bad := inversions(t, got)
	t.Logf("RabbitMQ: %d events over %d keys through 16 async workers: %d keys out of order", asyncKeys*asyncPerKey, asyncKeys, bad)
	assert.Zero(t, bad)
}

func TestAsyncKeepsPerKeyOrderKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.SeedTopics(6, "orders.events", "orders.events.dlq"))
	require.NoError(t, err)
	defer c.Close()
	host, port, err := net.SplitHostPort(c.ListenAddrs()[0])
	require.NoError(t, err)
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Type, cfg.Host, cfg.SpoolDir = true, broker.Kafka, host, t.TempDir()
	cfg.Port, err = strconv.Atoi(port)
	require.NoError(t, err)
	forwardAsync(t, cfg)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("orders.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := map[string][]int{}
	n := 0
	for n < asyncKeys*asyncPerKey && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			k, seq := decodeSeq(t, r.Value)
			got[k] = append(got[k], seq)
			n++
		})
	}
	bad := inversions(t, got)
	t.Logf("Kafka: %d events over %d keys through 16 async workers: %d keys out of order", asyncKeys*asyncPerKey, asyncKeys, bad)
	assert.Zero(t, bad)
}
