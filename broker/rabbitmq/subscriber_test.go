package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/testenv"
)

// counter counts deliveries by id.
type counter struct {
	mu  sync.Mutex
	n   map[string]int
	att map[string][]int
}

func (c *counter) add(d broker.Delivery) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n, c.att = map[string]int{}, map[string][]int{}
	}
	c.n[d.ID]++
	c.att[d.ID] = append(c.att[d.ID], d.Attempt)
	return c.n[d.ID]
}

func (c *counter) seen(ids []string) (all bool, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all = true
	for _, id := range ids {
		switch n := c.n[id]; {
		case n == 0:
			all = false
		case n > 1:
			dups += n - 1
		}
	}
	return all, dups
}

// publishMany publishes n messages from 32 goroutines and returns their ids.
func publishMany(t *testing.T, b broker.Broker, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				m := brokertest.NewMessage("order.created")
				ids[i] = m.ID
				if err := b.Publish(context.Background(), m); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return ids
}

// 10,000 events (2,000 outside the long test tier) round trip, none twice.
func TestConsumeTenThousand(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	var c counter
	f.subscribe(t, rabbitAddr(), func(_ context.Context, d broker.Delivery) error { c.add(d); return nil },
		rabbitmq.WithConcurrency(8), rabbitmq.WithLogger(discardLogger()))
	start := time.Now()
	n := testenv.Count(2000, 10000)
	ids := publishMany(t, b, n)
	waitFor(t, 5*time.Minute, "every event consumed", func() bool { all, _ := c.seen(ids); return all })
	_, dups := c.seen(ids)
	t.Logf("published=%d consumed=%d duplicates=%d in %v", n, n, dups, time.Since(start).Round(time.Millisecond))
	assert.Zero(t, dups, "no failure: no duplicate")
}

func TestConsumeRetryAndDeadLetter(t *testing.T) {
	for _, typ := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(typ), func(t *testing.T) { testConsumeRetryAndDeadLetter(t, typ) })
	}
}

func testConsumeRetryAndDeadLetter(t *testing.T, typ rabbitmq.QueueType) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	const flakyFails = 2
	var c counter
	flaky, doomed, poison := brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created")
	poison.Body = []byte("not json")
	next := brokertest.NewMessage("order.created") // doomed's key's next event: it waits, then goes on
	next.Key = doomed.Key
	var nextAfter atomic.Int32 // doomed's attempts when next ran
	f.subscribeType(t, rabbitAddr(), typ, func(_ context.Context, d broker.Delivery) error {
		n := c.add(d)
		switch d.ID {
		case next.ID:
			c.mu.Lock()
			nextAfter.Store(int32(c.n[doomed.ID]))
			c.mu.Unlock()
		case flaky.ID:
			if n <= flakyFails {
				return fmt.Errorf("flaky failure %d", n)
			}
		case doomed.ID:
			return errors.New("inventory service down")
		case poison.ID:
			return &broker.Error{Op: "decode", Kind: broker.ErrInvalid, Err: errors.New("undecodable body")}
		}
		return nil
	}, rabbitmq.WithMaxAttempts(3), rabbitmq.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range []broker.Message{flaky, doomed, poison, next} {
		require.NoError(t, b.Publish(ctx, m))
	}
	normal := publishMany(t, b, 100) // the main flow keeps going meanwhile

	waitFor(t, 15*time.Second, "flaky handled 3 times, doomed 3 times, all normal ones", func() bool {
		all, _ := c.seen(normal)
		c.mu.Lock()
		defer c.mu.Unlock()
		return all && c.n[flaky.ID] == flakyFails+1 && c.n[doomed.ID] == 3 && c.n[next.ID] == 1
	})
	assert.Equal(t, int32(3), nextAfter.Load(), "the key's next event ran after the dead one's last attempt")
	c.mu.Lock()
	assert.Equal(t, []int{1, 2, 3}, c.att[flaky.ID], "succeeds on attempt N+1")
	assert.Equal(t, []int{1, 2, 3}, c.att[doomed.ID])
	assert.Equal(t, []int{1}, c.att[poison.ID], "poison is not retried")
	c.mu.Unlock()

	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	dlq := map[string]map[string]any{}
	waitFor(t, 5*time.Second, "two dead letters", func() bool {
		d, ok, err := ch.Get(f.sub()+".dlq", true)
		if err == nil && ok {
			dlq[d.MessageId] = d.Headers
			assert.Equal(t, map[string][]byte{doomed.ID: doomed.Body, poison.ID: poison.Body}[d.MessageId], d.Body)
		}
		return len(dlq) == 2
	})
	assert.Contains(t, dlq[doomed.ID][broker.HeaderDeadLetterReason], "inventory service down")
	assert.Equal(t, "3", dlq[doomed.ID][broker.HeaderDeadLetterAttempts])
	assert.Equal(t, "handler_failed", dlq[doomed.ID][broker.HeaderDeadLetterCategory])
	assert.Equal(t, "1", dlq[poison.ID][broker.HeaderDeadLetterAttempts])
	assert.Equal(t, "invalid", dlq[poison.ID][broker.HeaderDeadLetterCategory])
	assert.Equal(t, "order.created", dlq[poison.ID][rabbitmq.HeaderOriginalRoutingKey])
	assert.Equal(t, "order.created", dlq[doomed.ID][rabbitmq.HeaderOriginalRoutingKey], "after retries too")
	assert.Equal(t, f.exchange, dlq[doomed.ID][rabbitmq.HeaderOriginalExchange])
	assert.Equal(t, doomed.Key, dlq[doomed.ID][broker.HeaderKey], "the key travels with the dead letter")
}

// The consumer's connection is cut several times mid-stream: every event is
// handled at least once.
func TestConsumeSurvivesConnectionCuts(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	p := newProxy(t)
	var c counter
	var handled atomic.Int64
	f.subscribe(t, p.Addr(), func(_ context.Context, d broker.Delivery) error {
		c.add(d)
		handled.Add(1)
		time.Sleep(100 * time.Microsecond) // a handler doing a little work
		return nil
	}, rabbitmq.WithConcurrency(4), rabbitmq.WithReconnectBackoff(20*time.Millisecond, 100*time.Millisecond),
		rabbitmq.WithLogger(discardLogger()))
	ids := publishMany(t, b, 3000)
	cuts := 0
	for _, at := range []int64{500, 1200, 2000} {
		waitFor(t, time.Minute, "consuming progress", func() bool { return handled.Load() >= at })
		if p.Cut() > 0 {
			cuts++
		}
	}
	waitFor(t, time.Minute, "every event handled", func() bool { all, _ := c.seen(ids); return all })
	_, dups := c.seen(ids)
	t.Logf("published=3000 handled-at-least-once=3000 cuts=%d duplicates=%d", cuts, dups)
	assert.GreaterOrEqual(t, cuts, 2)
}

// Close lets a running handler finish and acknowledges it: the message is
// not delivered again.
func TestSubscriberCloseWaitsForRunningHandler(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := rabbitmq.NewSubscriber(ctx, f.config(rabbitAddr()), rabbitmq.Queue{Name: f.sub()}, func(context.Context, broker.Delivery) error {
		if calls.Add(1) == 1 {
			close(started)
			<-release
		}
		return nil
	}, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
	<-started
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctx) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler was running", err)
	case <-time.After(100 * time.Millisecond): // Close must still be waiting; nothing else to wait on
	}
	close(release)
	require.NoError(t, <-closed)
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(f.sub(), true, false, false, false, nil)
	require.NoError(t, err)
	assert.Zero(t, q.Messages, "the finished message was acknowledged")
	assert.Equal(t, int32(1), calls.Load())
}

func TestNewSubscriberErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := rabbitmq.NewSubscriber(ctx, f.config(rabbitAddr()), rabbitmq.Queue{Name: f.sub()}, nil)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	_, err = rabbitmq.NewSubscriber(ctx, f.config(rabbitAddr()), rabbitmq.Queue{}, func(context.Context, broker.Delivery) error { return nil })
	assert.ErrorIs(t, err, broker.ErrInvalid)
	cfg := f.config(rabbitAddr())
	cfg.Password = broker.NewSecret("wrong")
	_, err = rabbitmq.NewSubscriber(ctx, cfg, rabbitmq.Queue{Name: f.sub()}, func(context.Context, broker.Delivery) error { return nil })
	assert.ErrorIs(t, err, broker.ErrUnauthorized)
}

// Close returns when its ctx ends even if a handler ignores its own ctx;
// the message that handler held is delivered again (to the next
// subscriber).
func TestSubscriberCloseHonoursContextWhateverTheHandler(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	started := make(chan struct{})
	stuck := make(chan struct{})
	defer close(stuck)
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := rabbitmq.NewSubscriber(ctx, f.config(rabbitAddr()), rabbitmq.Queue{Name: f.sub()}, func(context.Context, broker.Delivery) error {
		once.Do(func() { close(started) })
		<-stuck // ignores its ctx
		return nil
	}, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	m := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(ctx, m))
	<-started
	cctx, ccancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer ccancel()
	start := time.Now()
	assert.ErrorIs(t, s.Close(cctx), context.DeadlineExceeded)
	took := time.Since(start)
	t.Logf("Close(300ms) with a stuck handler returned after %v", took)
	assert.Less(t, took, 2*time.Second, "Close honours its ctx")

	redelivered := make(chan broker.Delivery, 1)
	f.subscribe(t, rabbitAddr(), func(_ context.Context, d broker.Delivery) error {
		select {
		case redelivered <- d:
		default:
		}
		return nil
	})
	select {
	case d := <-redelivered:
		assert.Equal(t, m.ID, d.ID, "the abandoned delivery is delivered again")
	case <-time.After(10 * time.Second):
		t.Fatal("the message the stuck handler held was never delivered again")
	}
}
