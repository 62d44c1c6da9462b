package retry_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/retry"
)

var (
	down       = &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: errors.New("connection refused")}
	unroutable = &broker.Error{Op: "test", Kind: broker.ErrUnroutable, Err: errors.New("no queue bound")}
)

// fakeClock advances only when the retry layer "sleeps".
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
	return ctx.Err()
}

// failN fails the first n publishes with err, then records.
func failN(n int, err error) (*brokertest.Recorder, *int) {
	calls := 0
	var mu sync.Mutex
	return &brokertest.Recorder{Fail: func(broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= n {
			return err
		}
		return nil
	}}, &calls
}

func newRetry(t *testing.T, next broker.Broker, opts ...retry.Option) (*retry.Broker, *fakeClock) {
	t.Helper()
	r, err := retry.New(next, opts...)
	require.NoError(t, err)
	c := &fakeClock{t: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}
	r.SetClock(c.now, c.sleep)
	r.SetJitter(func(d time.Duration) time.Duration { return d }) // the ceiling: deterministic
	return r, c
}

func TestRetriesThenSucceeds(t *testing.T) {
	rec, calls := failN(3, down)
	var attempts []retry.Attempt
	r, clock := newRetry(t, rec, retry.WithOnAttempt(func(a retry.Attempt) { attempts = append(attempts, a) }))
	require.NoError(t, r.Publish(context.Background(), brokertest.NewMessage("order.created")))
	assert.Equal(t, 4, *calls)
	assert.Len(t, rec.Messages(), 1)
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, clock.slept,
		"exponential ceilings 100ms, 200ms, 400ms")
	require.Len(t, attempts, 3)
	assert.Equal(t, 1, attempts[0].N)
	assert.ErrorIs(t, attempts[2].Err, broker.ErrUnavailable)
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	rec, _ := failN(100, down)
	r, clock := newRetry(t, rec, retry.WithMaxAttempts(10), retry.WithBackoff(100*time.Millisecond, time.Second),
		retry.WithMaxElapsed(time.Hour))
	var draws []time.Duration
	r.SetJitter(func(d time.Duration) time.Duration { draws = append(draws, d); return d / 2 })
	_ = r.Publish(context.Background(), brokertest.NewMessage("order.created"))
	assert.Equal(t, []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9, 1e9, 1e9, 1e9}, draws, "ceilings double up to the cap")
	assert.Equal(t, 50*time.Millisecond, clock.slept[0], "the wait is the jittered draw")
}

func TestBoundedByAttempts(t *testing.T) {
	rec, calls := failN(100, down)
	r, _ := newRetry(t, rec, retry.WithMaxAttempts(3))
	err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.Equal(t, 3, *calls)
	var ge *retry.GiveUpError
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, 3, ge.Attempts)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.NotErrorIs(t, err, broker.ErrDeadLettered, "no sink: the message is the caller's")
	assert.Contains(t, err.Error(), "gave up after 3 attempt(s)")
}

func TestBoundedByElapsed(t *testing.T) {
	rec, calls := failN(100, down)
	r, clock := newRetry(t, rec, retry.WithMaxAttempts(100), retry.WithMaxElapsed(time.Second))
	require.Error(t, r.Publish(context.Background(), brokertest.NewMessage("order.created")))
	// 100+200+400 = 700ms; the next wait (800ms) would pass 1s.
	assert.Equal(t, 4, *calls)
	assert.Equal(t, 700*time.Millisecond, clock.now().Sub(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)))
}

func TestNonRetryableIsNotRetried(t *testing.T) {
	rec, calls := failN(100, unroutable)
	r, _ := newRetry(t, rec)
	err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Equal(t, 1, *calls)
}

func TestCustomClassifierRetriesWhatItSays(t *testing.T) {
	rec, calls := failN(100, &broker.Error{Kind: broker.ErrInvalid, Err: errors.New("bad message")})
	r, _ := newRetry(t, rec, retry.WithMaxAttempts(4), retry.WithClassifier(func(error) bool { return true }))
	err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.Equal(t, 4, *calls, "a classifier that retries everything is bounded by the attempts")
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "bad message")
}

func TestCallerContextStopsRetries(t *testing.T) {
	rec, calls := failN(100, down)
	r, _ := newRetry(t, rec)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := r.Publish(ctx, brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.LessOrEqual(t, *calls, 1)
}

type memSink struct {
	mu      sync.Mutex
	entries []broker.DeadLetter
	err     error
	name    string
}

func (m *memSink) Put(_ context.Context, e broker.DeadLetter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.entries = append(m.entries, e)
	return nil
}
func (m *memSink) String() string { return m.name }

func TestDeadLetterRouting(t *testing.T) {
	t.Run("unreachable goes to the spool", func(t *testing.T) {
		spool, dlq := &memSink{name: "spool"}, &memSink{name: "dlq"}
		rec, _ := failN(100, down)
		r, _ := newRetry(t, rec, retry.WithMaxAttempts(2), retry.WithDeadLetter(spool), retry.WithRejectedDeadLetter(dlq))
		m := brokertest.NewMessage("order.created")
		err := r.Publish(context.Background(), m)
		assert.ErrorIs(t, err, broker.ErrDeadLettered)
		assert.False(t, broker.IsRetryable(err), "a dead-lettered message must not be retried")
		assert.Contains(t, err.Error(), "dead-lettered to spool")
		require.Len(t, spool.entries, 1)
		assert.Empty(t, dlq.entries)
		e := spool.entries[0]
		assert.Equal(t, m.ID, e.Message.ID)
		assert.Equal(t, m.Body, e.Message.Body)
		assert.Equal(t, 2, e.Attempts)
		assert.Equal(t, "unavailable", e.Category)
		assert.Contains(t, e.Reason, "connection refused")
		assert.False(t, e.FirstFailure.After(e.LastFailure))
	})
	t.Run("refused goes to the broker's dead-letter queue", func(t *testing.T) {
		spool, dlq := &memSink{name: "spool"}, &memSink{name: "dlq"}
		rec, _ := failN(100, unroutable)
		r, _ := newRetry(t, rec, retry.WithDeadLetter(spool), retry.WithRejectedDeadLetter(dlq))
		err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
		assert.ErrorIs(t, err, broker.ErrDeadLettered)
		assert.ErrorIs(t, err, broker.ErrUnroutable)
		assert.Len(t, dlq.entries, 1)
		assert.Empty(t, spool.entries)
		assert.Equal(t, "unroutable", dlq.entries[0].Category)
	})
	t.Run("dlq down falls back to the spool", func(t *testing.T) {
		spool, dlq := &memSink{name: "spool"}, &memSink{name: "dlq", err: down}
		rec, _ := failN(100, unroutable)
		r, _ := newRetry(t, rec, retry.WithDeadLetter(spool), retry.WithRejectedDeadLetter(dlq))
		err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
		assert.ErrorIs(t, err, broker.ErrDeadLettered)
		assert.Len(t, spool.entries, 1)
	})
	t.Run("every sink fails: said, not swallowed", func(t *testing.T) {
		spool := &memSink{name: "spool", err: errors.New("disk full")}
		rec, _ := failN(100, down)
		r, _ := newRetry(t, rec, retry.WithMaxAttempts(1), retry.WithDeadLetter(spool))
		err := r.Publish(context.Background(), brokertest.NewMessage("order.created"))
		assert.NotErrorIs(t, err, broker.ErrDeadLettered)
		assert.ErrorContains(t, err, "disk full")
		assert.ErrorIs(t, err, broker.ErrUnavailable)
	})
	t.Run("caller gave up while retrying: still spooled", func(t *testing.T) {
		spool := &memSink{name: "spool"}
		ctx, cancel := context.WithCancel(context.Background())
		rec := &brokertest.Recorder{Fail: func(broker.Message) error { cancel(); return down }}
		r, _ := newRetry(t, rec, retry.WithDeadLetter(spool))
		err := r.Publish(ctx, brokertest.NewMessage("order.created"))
		assert.ErrorIs(t, err, broker.ErrDeadLettered)
		assert.Len(t, spool.entries, 1)
	})
	t.Run("caller gave up before: not accepted", func(t *testing.T) {
		spool := &memSink{name: "spool"}
		r, _ := newRetry(t, &brokertest.Recorder{}, retry.WithDeadLetter(spool))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := r.Publish(ctx, brokertest.NewMessage("order.created"))
		assert.Equal(t, context.Canceled, err, "a ctx already done is returned as it is")
		assert.Empty(t, spool.entries)
	})
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Harness {
		rec := &brokertest.Recorder{}
		r, err := retry.New(rec)
		require.NoError(t, err)
		return brokertest.Harness{Broker: r, Receive: brokertest.RecorderReceiver(rec)}
	})
}

func TestBadOptions(t *testing.T) {
	_, err := retry.New(nil)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	for _, o := range []retry.Option{retry.WithMaxAttempts(0), retry.WithBackoff(0, 1), retry.WithBackoff(2, 1),
		retry.WithMaxElapsed(0), retry.WithClassifier(nil), retry.WithAttemptTimeout(-1), retry.WithSinkTimeout(0),
		retry.WithObserver(nil), retry.WithLogger(nil)} {
		_, err := retry.New(&brokertest.Recorder{}, o)
		assert.ErrorIs(t, err, broker.ErrInvalid)
	}
}
