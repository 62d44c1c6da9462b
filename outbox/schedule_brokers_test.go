package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// timedBroker records when the relay first called Publish for each id.
type timedBroker struct {
	broker.Broker
	mu sync.Mutex
	at map[string]time.Time
}

func (b *timedBroker) Publish(ctx context.Context, m broker.Message) error {
	now := time.Now()
	b.mu.Lock()
	if _, ok := b.at[m.ID]; !ok {
		b.at[m.ID] = now
	}
	b.mu.Unlock()
	return b.Broker.Publish(ctx, m)
}

func (b *timedBroker) calledAt(id string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.at[id]
}

// received is a message as a consumer read it from the broker.
type received struct {
	id, key, seq string
	partition    int32 // Kafka
}

// runScheduledOnBroker: a key's event, one scheduled 1.5 s ahead and the
// key's next event, relayed to a real broker: the key's events arrive
// numbered 1 and 2, the scheduled one with its key and no number, and its
// publish began at its time, not before.
func runScheduledOnBroker(t *testing.T, db *dbtest.DB, b broker.Broker, read func() []received) {
	s := newStore(t, db)
	tb := &timedBroker{Broker: b, at: map[string]time.Time{}}
	startRelay(t, s, tb, fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
	ctx := context.Background()
	key := "order-" + newID()
	first, reminder, second := newMsg(key), newMsg(key), newMsg(key)
	reminder.Name = "order.payment_reminder"
	at := time.Now().Add(1500 * time.Millisecond)
	require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
		if err := s.Publish(ctx, first); err != nil {
			return err
		}
		if err := s.Publish(outbox.WithDeliverAt(ctx, at), reminder); err != nil {
			return err
		}
		return s.Publish(ctx, second)
	}))
	got := map[string]received{}
	brokertest.WaitFor(t, 60*time.Second, "the three messages", func() bool {
		for _, r := range read() {
			got[r.id] = r
		}
		return len(got) == 3
	})
	assert.Equal(t, received{id: first.ID, key: key, seq: "1", partition: got[first.ID].partition}, got[first.ID])
	assert.Equal(t, received{id: second.ID, key: key, seq: "2", partition: got[first.ID].partition}, got[second.ID])
	assert.Equal(t, received{id: reminder.ID, key: key, seq: "", partition: got[first.ID].partition}, got[reminder.ID],
		"its own key (and so its key's partition), no number")
	assert.False(t, tb.calledAt(reminder.ID).Before(at), "published at %v, before its time %v", tb.calledAt(reminder.ID), at)
}

func TestScheduledRabbitMQ(t *testing.T) {
	dest := newRabbitDest(t, "#")
	runScheduledOnBroker(t, dbtest.RequirePostgres(t), dest.open(t), func() []received {
		var out []received
		for _, d := range readRabbitMsgs(t, dest.ch, dest.queue) {
			r := received{id: d.MessageId}
			if v, ok := d.Headers[broker.HeaderKey]; ok {
				r.key = fmt.Sprint(v)
			}
			if v, ok := d.Headers[broker.HeaderSeq]; ok {
				r.seq = fmt.Sprint(v)
			}
			out = append(out, r)
		}
		return out
	})
}

func TestScheduledKafka(t *testing.T) {
	topic := "det.outbox." + uuid.NewString()[:8]
	c, err := kfake.NewCluster(kfake.SeedTopics(3, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Type, cfg.Addresses, cfg.Topic = true, broker.Kafka, c.ListenAddrs(), topic
	b, err := kafka.New(context.Background(), cfg, kafka.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	runScheduledOnBroker(t, dbtest.RequireMariaDB(t), b, func() []received { return readKafkaRecords(t, c.ListenAddrs(), topic) })
}

// readKafkaRecords reads every partition of topic from the start to its
// high-water mark.
func readKafkaRecords(t *testing.T, addrs []string, topic string) []received {
	var out []received
	eachKafkaRecord(t, addrs, topic, func(m *sarama.ConsumerMessage) {
		r := received{key: string(m.Key), partition: m.Partition}
		for _, h := range m.Headers {
			switch string(h.Key) {
			case kafka.HeaderID:
				r.id = string(h.Value)
			case broker.HeaderSeq:
				r.seq = string(h.Value)
			}
		}
		out = append(out, r)
	})
	return out
}
