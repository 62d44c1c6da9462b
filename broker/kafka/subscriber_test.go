package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/internal/testenv"
)

// orderLog records, per key, the sequence numbers handled.
type orderLog struct {
	mu    sync.Mutex
	byKey map[string][]int
	ids   map[string]int
}

func (l *orderLog) add(d broker.Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byKey == nil {
		l.byKey, l.ids = map[string][]int{}, map[string]int{}
	}
	seq, _ := strconv.Atoi(d.Headers["seq"])
	l.byKey[d.Key] = append(l.byKey[d.Key], seq)
	l.ids[d.ID]++
}

func (l *orderLog) count() (distinct, dups int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.ids {
		distinct++
		dups += n - 1
	}
	return distinct, dups
}

// publishOrders publishes perKey events for each of keys orders, each
// order's events in sequence (one goroutine per order).
func publishOrders(t *testing.T, b *kafka.Broker, keys, perKey int) {
	t.Helper()
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			key := fmt.Sprintf("order-%03d", k)
			for i := range perKey {
				m := brokertest.NewMessage("order.status.updated")
				m.Key = key
				m.Headers = map[string]string{"seq": strconv.Itoa(i)}
				if err := b.Publish(context.Background(), m); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// 10,000 events over 100 keys (2,000 outside the long test tier) round
// trip, each key's in order.
func TestConsumeTenThousandInOrder(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	var log orderLog
	c.subscribe(t, topic, "order-check", func(_ context.Context, d broker.Delivery) error { log.add(d); return nil },
		kafka.WithLogger(discardLogger()))
	start := time.Now()
	keys := testenv.Count(20, 100)
	publishOrders(t, b, keys, 100)
	waitFor(t, 5*time.Minute, "every event consumed", func() bool { n, _ := log.count(); return n == keys*100 })
	distinct, dups := log.count()
	log.mu.Lock()
	defer log.mu.Unlock()
	outOfOrder := 0
	for key, seqs := range log.byKey {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				outOfOrder++
				t.Errorf("key %s: seq %d after %d", key, seqs[i], seqs[i-1])
				break
			}
		}
	}
	t.Logf("published=%d consumed=%d duplicates=%d keys=%d out-of-order-keys=%d in %v", keys*100, distinct, dups, len(log.byKey), outOfOrder, time.Since(start).Round(time.Millisecond))
}

// A group member is closed mid-stream and another takes over: every event
// is handled at least once.
func TestConsumeMemberClosedMidStream(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	var log orderLog
	var handled atomic.Int64
	h := func(_ context.Context, d broker.Delivery) error {
		log.add(d)
		handled.Add(1)
		time.Sleep(200 * time.Microsecond)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := kafka.NewSubscriber(ctx, c.config(topic), "takeover", h, kafka.WithLogger(discardLogger()))
	require.NoError(t, err)
	publishOrders(t, b, 30, 100)
	waitFor(t, 30*time.Second, "the first member to make progress", func() bool { return handled.Load() >= 1000 })
	require.NoError(t, first.Close(ctx))
	atClose := handled.Load()
	c.subscribe(t, topic, "takeover", h, kafka.WithLogger(discardLogger()))
	waitFor(t, time.Minute, "every event handled", func() bool { n, _ := log.count(); return n == 3000 })
	distinct, dups := log.count()
	t.Logf("published=3000 handled-by-first=%d distinct=%d duplicates=%d", atClose, distinct, dups)
}

func TestConsumeRetryAndDeadLetter(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	b := c.open(t, topic)
	flaky, doomed, poison := brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created")
	poison.Body = []byte("not json")
	var mu sync.Mutex
	attempts := map[string][]int{}
	var normal atomic.Int32
	c.subscribe(t, topic, "retry-check", func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		attempts[d.ID] = append(attempts[d.ID], d.Attempt)
		n := len(attempts[d.ID])
		mu.Unlock()
		switch d.ID {
		case flaky.ID:
			if n <= 2 {
				return fmt.Errorf("flaky failure %d", n)
			}
		case doomed.ID:
			return errors.New("inventory service down")
		case poison.ID:
			return &broker.Error{Op: "decode", Kind: broker.ErrInvalid, Err: errors.New("undecodable body")}
		default:
			normal.Add(1)
		}
		return nil
	}, kafka.WithMaxAttempts(3), kafka.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range []broker.Message{flaky, doomed, poison} {
		require.NoError(t, b.Publish(ctx, m))
	}
	publishOrders(t, b, 10, 10)
	waitFor(t, 20*time.Second, "everything handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return normal.Load() == 100 && len(attempts[flaky.ID]) == 3 && len(attempts[doomed.ID]) == 3 && len(attempts[poison.ID]) == 1
	})
	mu.Lock()
	assert.Equal(t, []int{1, 2, 3}, attempts[flaky.ID], "succeeds on attempt N+1")
	assert.Equal(t, []int{1, 2, 3}, attempts[doomed.ID])
	assert.Equal(t, []int{1}, attempts[poison.ID], "poison is not retried")
	mu.Unlock()

	got, err := c.readBack(ctx, t, []string{doomed.ID, poison.ID}, topic+".dlq")
	require.NoError(t, err)
	d, p := got[doomed.ID][0], got[poison.ID][0]
	assert.Equal(t, doomed.Body, d.rec.Value)
	assert.Equal(t, doomed.Key, string(d.rec.Key))
	assert.Contains(t, d.headers[broker.HeaderDeadLetterReason], "inventory service down")
	assert.Equal(t, "3", d.headers[broker.HeaderDeadLetterAttempts])
	assert.Equal(t, []byte("not json"), p.rec.Value)
	assert.Equal(t, "invalid", p.headers[broker.HeaderDeadLetterCategory])
	assert.Equal(t, "1", p.headers[broker.HeaderDeadLetterAttempts])
}

func TestNewSubscriberErrors(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic}) // no <topic>.dlq
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok := func(context.Context, broker.Delivery) error { return nil }
	_, err := kafka.NewSubscriber(ctx, c.config(topic), "", ok)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	_, err = kafka.NewSubscriber(ctx, c.config(topic), "g", nil)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	_, err = kafka.NewSubscriber(ctx, c.config(topic), "g", ok, kafka.WithLogger(discardLogger()))
	assert.ErrorIs(t, err, broker.ErrUnroutable, "the dead-letter topic must exist")
	assert.ErrorContains(t, err, topic+".dlq")
}
