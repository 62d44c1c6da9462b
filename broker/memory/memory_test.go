package memory_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/memory"
)

func newBroker(t *testing.T, opts ...memory.Option) *memory.Broker {
	t.Helper()
	b, err := memory.New(append([]memory.Option{memory.WithLogger(brokertest.Logger(t))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Harness {
		b := newBroker(t)
		var queues atomic.Int64
		var ordered *memory.Subscriber
		return brokertest.Harness{
			Broker: b,
			Receive: func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
				got := map[string]broker.Message{}
				for _, m := range b.Messages() { // a publish that returned nil is there
					got[m.ID] = m
				}
				return got, nil
			},
			Subscribe: func(h broker.Handler) (broker.Subscriber, error) {
				return b.Subscribe(fmt.Sprintf("q%d", queues.Add(1)), h)
			},
			DeadLetters: func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
				got := map[string]broker.Message{}
				for _, id := range ids {
					m, err := b.WaitDeadLetter(ctx, id)
					if err != nil {
						return got, err
					}
					got[id] = m
				}
				return got, nil
			},
			SubscribeKeyOrdered: func(h broker.Handler) (broker.Subscriber, error) {
				s, err := b.Subscribe("ordered", h, memory.WithConcurrency(16))
				ordered = s
				return s, err
			},
			CutSubscriber: func() { ordered.Cut() },
			Timeout:       30 * time.Second,
		}
	})
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestWaits(t *testing.T) {
	b := newBroker(t)
	s, err := b.Subscribe("q", func(_ context.Context, d broker.Delivery) error {
		if d.Name == "order.cancelled" && d.Attempt == 1 {
			return errors.New("transient")
		}
		return nil
	})
	require.NoError(t, err)
	ctx := ctx10(t)
	created := brokertest.NewMessage("order.created")
	cancelled := brokertest.NewMessage("order.cancelled")
	require.NoError(t, b.Publish(ctx, created))
	require.NoError(t, b.Publish(ctx, cancelled))

	d, err := s.WaitEvent(ctx, created.ID)
	require.NoError(t, err)
	assert.Equal(t, created.ID, d.ID)
	d, err = s.WaitName(ctx, "order.cancelled")
	require.NoError(t, err)
	assert.Equal(t, 2, d.Attempt, "handled on its retry")
	require.NoError(t, s.WaitHandled(ctx, 2))
	require.NoError(t, s.WaitQuiet(ctx))
	st := s.Stats()
	assert.Equal(t, memory.Stats{Handled: 2, Retries: 1}, st)

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = s.WaitEvent(short, "no-such-id")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "no-such-id")
	assert.ErrorContains(t, err, "2 deliveries handled")
}

func TestDeadLetterHeaders(t *testing.T) {
	b := newBroker(t)
	s, err := b.Subscribe("billing", func(context.Context, broker.Delivery) error { return errors.New("database down") },
		memory.WithMaxAttempts(3))
	require.NoError(t, err)
	ctx := ctx10(t)
	m := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(ctx, m))
	dl, err := b.WaitDeadLetter(ctx, m.ID)
	require.NoError(t, err)
	assert.Equal(t, "database down", dl.Headers[broker.HeaderDeadLetterReason])
	assert.Equal(t, broker.CategoryHandlerFailed, dl.Headers[broker.HeaderDeadLetterCategory])
	assert.Equal(t, "3", dl.Headers[broker.HeaderDeadLetterAttempts])
	assert.NotEmpty(t, dl.Headers[broker.HeaderDeadLetterFirstFailure])
	assert.Equal(t, "billing", dl.Headers[memory.HeaderOriginalQueue])
	assert.Equal(t, m.Body, dl.Body)
	require.NoError(t, s.WaitQuiet(ctx), "a dead letter settles its message")
	assert.Equal(t, 1, s.Stats().DeadLettered)
	assert.Empty(t, s.Handled())
}

// What a closed subscriber did not finish goes to the queue's next one;
// what it acknowledged does not.
func TestCloseLeavesTheRestToTheNextSubscriber(t *testing.T) {
	b := newBroker(t)
	ctx := ctx10(t)
	release := make(chan struct{})
	var first atomic.Int64
	s1, err := b.Subscribe("q", func(ctx context.Context, d broker.Delivery) error {
		if first.Add(1) == 1 {
			return nil
		}
		select { // the second blocks until Close gives up on it
		case <-release:
		case <-ctx.Done():
		}
		return ctx.Err()
	})
	require.NoError(t, err)
	var ids []string
	for range 5 {
		m := brokertest.NewMessage("order.created")
		m.Key = "order-1"
		require.NoError(t, b.Publish(ctx, m))
		ids = append(ids, m.ID)
	}
	require.NoError(t, s1.WaitHandled(ctx, 1))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s1.Close(short), context.DeadlineExceeded, "the running handler did not finish")
	close(release)

	var mu sync.Mutex
	var got []string
	s2, err := b.Subscribe("q", func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, d.ID)
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, s2.WaitQuiet(ctx))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, ids[1:], got, "the next subscriber gets what was not acknowledged, in order")
}

func TestSubscribeErrors(t *testing.T) {
	b := newBroker(t)
	h := func(context.Context, broker.Delivery) error { return nil }
	_, err := b.Subscribe("", h)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	_, err = b.Subscribe("q", nil)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	_, err = b.Subscribe("q", h, memory.WithConcurrency(0))
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WithConcurrency(0)")
	_, err = b.Subscribe("q", h)
	require.NoError(t, err)
	_, err = b.Subscribe("q", h)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, `queue "q" already has a subscriber`)
	require.NoError(t, b.Close(ctx10(t)))
	_, err = b.Subscribe("other", h)
	assert.ErrorIs(t, err, broker.ErrClosed)
	_, err = memory.New(memory.WithLogger(nil))
	assert.ErrorIs(t, err, broker.ErrInvalid)
}

// Closing the broker stops every subscriber: no goroutine is left.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := memory.New(memory.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	ctx := ctx10(t)
	for q := range 3 {
		_, err := b.Subscribe(fmt.Sprint("q", q), func(context.Context, broker.Delivery) error { return errors.New("fails") },
			memory.WithConcurrency(4), memory.WithRetryBackoff(time.Second, time.Second)) // a retry timer pending at Close
		require.NoError(t, err)
	}
	for range 20 {
		require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
	}
	require.NoError(t, b.Close(ctx))
	require.NoError(t, b.Close(ctx), "second Close")
	assert.ErrorIs(t, b.Publish(ctx, brokertest.NewMessage("order.created")), broker.ErrClosed)
	brokertest.WaitFor(t, time.Minute, "the goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}
