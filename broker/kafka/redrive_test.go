package kafka_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
)

func selectedIDs(res broker.RedriveResult) []string {
	var out []string
	for _, s := range res.Selected {
		out = append(out, s.Message.ID)
	}
	return out
}

// End to end on one partition: the subscriber's dead letters go back to
// the topic (key, value, headers kept; the dead letter's own headers
// dropped) and are handled again from attempt 1; a re-drive of some of
// them keeps the others for the next run, which does not move the first
// ones again.
func TestRedriveDeadLetterTopic(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	dlq := topic + ".dlq"
	c := newCluster(t, []string{topic, dlq})
	b := c.open(t, topic)
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	handled := map[string]broker.Delivery{}
	c.subscribe(t, topic, "redrive-check", func(_ context.Context, d broker.Delivery) error {
		if down.Load() {
			return &broker.Error{Op: "decode", Kind: broker.ErrInvalid, Err: errors.New("Unknown schema version")}
		}
		mu.Lock()
		handled[d.ID] = d
		mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var msgs []broker.Message
	for _, name := range []string{"order.created", "order.cancelled", "order.created", "order.cancelled", "order.created"} {
		m := brokertest.NewMessage(name)
		m.Key = "order-1" // one partition, in this order
		m.Headers = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		msgs = append(msgs, m)
		require.NoError(t, b.Publish(ctx, m))
	}
	all := []string{msgs[0].ID, msgs[1].ID, msgs[2].ID, msgs[3].ID, msgs[4].ID}
	_, err := c.readBack(ctx, t, all, dlq)
	require.NoError(t, err)
	cfg := c.config(topic)

	res, err := kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, all, selectedIDs(res), "in the order of the partition")
	assert.Equal(t, 5, res.Scanned)
	assert.Zero(t, res.Moved)
	s := res.Selected[0]
	assert.Equal(t, broker.Destination{System: "kafka", Name: topic}, s.To)
	assert.Equal(t, "order-1", s.Message.Key)
	assert.Equal(t, msgs[0].Body, s.Message.Body)
	assert.Equal(t, msgs[0].Headers, s.Message.Headers, "its own headers only")
	assert.Equal(t, broker.CategoryInvalid, s.Category)
	assert.Contains(t, s.Reason, "Unknown schema version")
	assert.Equal(t, 1, s.Attempts)

	for _, tc := range []struct {
		name string
		o    broker.RedriveOptions
		want []string
	}{
		{"name", broker.RedriveOptions{Name: "order.cancelled", DryRun: true}, []string{msgs[1].ID, msgs[3].ID}},
		{"id", broker.RedriveOptions{ID: msgs[2].ID, DryRun: true}, []string{msgs[2].ID}},
		{"reason", broker.RedriveOptions{Reason: "schema", DryRun: true}, all},
		{"limit", broker.RedriveOptions{Limit: 2, DryRun: true}, all[:2]},
		{"nothing", broker.RedriveOptions{Reason: "too large", DryRun: true}, nil},
	} {
		res, err := kafka.Redrive(ctx, cfg, dlq, tc.o)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, selectedIDs(res), tc.name)
	}

	down.Store(false)
	res, err = kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{Name: "order.cancelled"})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Moved)
	assert.Zero(t, res.Failed())
	waitFor(t, time.Minute, "the two re-driven handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 2
	})
	res, err = kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, []string{msgs[0].ID, msgs[2].ID, msgs[4].ID}, selectedIDs(res), "the moved ones are not seen again")

	res, err = kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Moved)
	waitFor(t, time.Minute, "all five handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 5
	})
	mu.Lock()
	for _, m := range msgs {
		d := handled[m.ID]
		assert.Equal(t, 1, d.Attempt)
		assert.Equal(t, m.Name, d.Name)
		assert.Equal(t, m.Key, d.Key)
		assert.Equal(t, m.Body, d.Body)
		assert.Equal(t, m.Headers, d.Headers, "none of the dead letter's headers")
	}
	mu.Unlock()
	res, err = kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{})
	require.NoError(t, err)
	assert.Zero(t, res.Scanned, "the cursor is past everything")
	assert.Empty(t, res.Selected)
}

// The publisher's dead letters say their topic; a record without it goes
// to the dead-letter topic's name without ".dlq". Errors name what is
// wrong.
func TestRedriveSinkAndErrors(t *testing.T) {
	checkNoLeak(t)
	topic, other := uniqueTopic(), uniqueTopic()
	dlq := topic + ".dlq"
	c := newCluster(t, []string{topic, dlq, other})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := c.config(topic)
	sink, err := kafka.NewDeadLetterSink(ctx, c.config(topic), kafka.WithLogger(testLogger(t)), kafka.WithTopicPerEvent())
	require.NoError(t, err)
	viaSink := brokertest.NewMessage(other) // its own topic: the event name
	viaSink.Key = "k"
	require.NoError(t, sink.Put(ctx, broker.DeadLetter{Message: viaSink, Reason: "too large", Category: broker.CategoryTooLarge, Attempts: 1}))
	require.NoError(t, sink.Close(ctx))
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...))
	require.NoError(t, err)
	defer cl.Close()
	bare := brokertest.NewMessage("order.created")
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: dlq, Key: []byte("k"), Value: bare.Body,
		Headers: []kgo.RecordHeader{{Key: kafka.HeaderID, Value: []byte(bare.ID)}, {Key: kafka.HeaderName, Value: []byte(bare.Name)}}}).FirstErr())

	res, err := kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{})
	require.NoError(t, err)
	require.Len(t, res.Selected, 2)
	to := map[string]string{}
	for _, s := range res.Selected {
		to[s.Message.ID] = s.To.Name
	}
	assert.Equal(t, map[string]string{viaSink.ID: other, bare.ID: topic}, to)
	assert.Equal(t, 2, res.Moved)
	got, err := c.readBack(ctx, t, []string{viaSink.ID, bare.ID}, topic, other)
	require.NoError(t, err)
	assert.Equal(t, other, got[viaSink.ID][0].rec.Topic)
	assert.Equal(t, topic, got[bare.ID][0].rec.Topic)
	assert.NotContains(t, got[viaSink.ID][0].headers, broker.HeaderDeadLetterReason)
	assert.NotContains(t, got[viaSink.ID][0].headers, kafka.HeaderOriginalTopic)

	_, err = kafka.Redrive(ctx, cfg, topic+".nosuch", broker.RedriveOptions{})
	require.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), topic+".nosuch")
	_, err = kafka.Redrive(ctx, cfg, dlq, broker.RedriveOptions{Limit: -1})
	require.ErrorIs(t, err, broker.ErrInvalid)
	_, err = kafka.Redrive(ctx, cfg, "", broker.RedriveOptions{})
	require.ErrorIs(t, err, broker.ErrInvalid)
}
