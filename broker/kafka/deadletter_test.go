package kafka_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/retry"
)

// A record Kafka refuses for good goes to <topic>.dlq at once: same key,
// value and headers, plus the reason.
func TestRefusedGoesToDeadLetterTopic(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	c.needFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := c.open(t, topic)
	dlq, err := kafka.NewDeadLetterSink(ctx, c.config(topic), kafka.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer dlq.Close(ctx)
	assert.Equal(t, "kafka topic "+topic+".dlq", dlq.String())
	r, err := retry.New(b, retry.WithRejectedDeadLetter(dlq), retry.WithLogger(discardLogger()))
	require.NoError(t, err)

	var seen atomic.Int32
	produceError(c, int16(sarama.ErrMessageSizeTooLarge), 1, &seen) // only the main publish is refused
	m := brokertest.NewMessage("order.created")
	m.Key = "order-42"
	m.Body = []byte{0xff, 0x00, '{', '}'}
	m.Headers = map[string]string{"trace": "t-3"}
	err = r.Publish(ctx, m)
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrDeadLettered)
	assert.ErrorIs(t, err, broker.ErrTooLarge)

	got, err := c.readBack(ctx, t, []string{m.ID}, topic+".dlq")
	require.NoError(t, err)
	require.Len(t, got[m.ID], 1)
	rec := got[m.ID][0]
	assert.Equal(t, m.Body, rec.rec.Value, "value byte-identical")
	assert.Equal(t, "order-42", string(rec.rec.Key))
	assert.Equal(t, "t-3", rec.headers["trace"])
	assert.Equal(t, "order.created", rec.headers[kafka.HeaderName])
	assert.Equal(t, "too_large", rec.headers[broker.HeaderDeadLetterCategory])
	assert.Contains(t, rec.headers[broker.HeaderDeadLetterReason], "too large")
}
