package rabbitmq_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/internal/testenv"
)

// TestOutageSpoolsThenReplays: with RabbitMQ unreachable, 1,000 events
// (200 outside the long test tier) go through retry into the local spool,
// each exactly once with its reason; when RabbitMQ is back, replay
// delivers all of them to the queue and empties the spool.
func TestOutageSpoolsThenReplays(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr(), rabbitmq.WithReconnectBackoff(20*time.Millisecond, 100*time.Millisecond))
	spool, err := deadletter.OpenSpool(t.TempDir())
	require.NoError(t, err)
	defer spool.Close()
	r, err := retry.New(b, retry.WithDeadLetter(spool), retry.WithMaxAttempts(3),
		retry.WithAttemptTimeout(100*time.Millisecond), retry.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		retry.WithLogger(discardLogger()))
	require.NoError(t, err)

	p.Refuse()
	n := testenv.Count(200, 1000)
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < n; i += 50 {
				m := brokertest.NewMessage("order.created")
				ids[i] = m.ID
				errs[i] = r.Publish(context.Background(), m)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.ErrorIs(t, err, broker.ErrDeadLettered, "event %d", i)
	}
	seen := map[string]int{}
	rep, err := spool.Scan(func(e broker.DeadLetter) error {
		seen[e.Message.ID]++
		if e.Category != "unavailable" || e.Attempts != 3 || e.Reason == "" {
			return fmt.Errorf("entry %s: category %q attempts %d reason %q", e.Message.ID, e.Category, e.Attempts, e.Reason)
		}
		return nil
	})
	require.NoError(t, err)
	assert.Empty(t, rep.Torn)
	for _, id := range ids {
		require.Equal(t, 1, seen[id], "event %s must be in the spool exactly once", id)
	}
	assert.Len(t, seen, n)

	p.Accept()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := spool.Replay(ctx, b, deadletter.ReplayOptions{})
	require.NoError(t, err)
	assert.Equal(t, n, res.Published)
	assert.Zero(t, res.Failed)

	got, dups, err := f.drain(ctx, t, ids)
	require.NoError(t, err, "every spooled event reaches the queue")
	moreDups, unknown := f.countRest(t, got)
	dups += moreDups
	left, err := spool.Scan(func(broker.DeadLetter) error { return nil })
	require.NoError(t, err)
	t.Logf("published=%d spooled=%d replayed=%d found=%d duplicates=%d unknown=%d spool-left=%d",
		n, len(seen), res.Published, len(got), dups, unknown, left.Entries)
	assert.Zero(t, left.Entries, "spool empty after the replay")
	assert.Zero(t, spool.Len())
}

// TestUnroutableGoesToDeadLetterQueue: a message RabbitMQ cannot route is
// not retried; it lands in <exchange>.dlq byte-identical, with the reason.
func TestUnroutableGoesToDeadLetterQueue(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, f.config(rabbitAddr()), rabbitmq.WithLogger(testLogger(t))) // no queue bound
	require.NoError(t, err)
	defer b.Close(ctx)
	dlq, err := rabbitmq.NewDeadLetterSink(ctx, f.config(rabbitAddr()), rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer dlq.Close(ctx)
	t.Cleanup(func() {
		ch, err := f.admin.Channel()
		if err == nil {
			_, _ = ch.QueueDelete(f.exchange+".dlq", false, false, false)
			_ = ch.ExchangeDelete(f.exchange+".dlx", false, false)
			_ = ch.Close()
		}
	})
	spool, err := deadletter.OpenSpool(t.TempDir())
	require.NoError(t, err)
	defer spool.Close()
	var attempts int
	r, err := retry.New(b, retry.WithRejectedDeadLetter(dlq), retry.WithDeadLetter(spool),
		retry.WithOnAttempt(func(retry.Attempt) { attempts++ }), retry.WithLogger(testLogger(t)))
	require.NoError(t, err)

	m := brokertest.NewMessage("order.cancelled")
	m.Body = []byte("{\"name\":\"order.cancelled\",\"note\":\"\u00e9\\u00e9 \x01\"}")
	m.Headers = map[string]string{"trace": "t-9"}
	err = r.Publish(ctx, m)
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrDeadLettered)
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Equal(t, 1, attempts, "unroutable is not retried")
	assert.Contains(t, err.Error(), "rabbitmq queue "+f.exchange+".dlq")

	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	var d struct {
		ok   bool
		body []byte
		id   string
		rk   string
		h    map[string]any
	}
	waitFor(t, 5*time.Second, "the dead letter", func() bool {
		msg, ok, err := ch.Get(f.exchange+".dlq", true)
		if err != nil || !ok {
			return false
		}
		d.ok, d.body, d.id, d.rk, d.h = true, msg.Body, msg.MessageId, msg.RoutingKey, msg.Headers
		return true
	})
	assert.Equal(t, m.Body, d.body, "body byte-identical")
	assert.Equal(t, m.ID, d.id)
	assert.Equal(t, "order.cancelled", d.rk)
	assert.Equal(t, "t-9", d.h["trace"])
	assert.Equal(t, "unroutable", d.h[broker.HeaderDeadLetterCategory])
	assert.Contains(t, d.h[broker.HeaderDeadLetterReason], "no queue bound")
	assert.Equal(t, "1", d.h[broker.HeaderDeadLetterAttempts])
	rep, err := spool.Scan(func(broker.DeadLetter) error { return nil })
	require.NoError(t, err)
	assert.Zero(t, rep.Entries, "the broker took it: nothing spooled")
}
