package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/events"
)

func cancelled(i int) events.OrderCancelled {
	return events.OrderCancelled{OrderID: "o-" + string(rune('a'+i%26)), UserID: "u", OldStatus: "created", NewStatus: "cancelled"}
}

type memSink struct {
	mu  sync.Mutex
	got []broker.DeadLetter
}

func (m *memSink) Put(_ context.Context, d broker.DeadLetter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, d)
	return nil
}

func (m *memSink) ids() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, d := range m.got {
		out[d.Message.ID] = true
	}
	return out
}

func TestAsyncForwarderPublishesEverything(t *testing.T) {
	rec := &brokertest.Recorder{}
	f, err := bridge.NewForwarder(rec, bridge.WithAsync(4, 8))
	require.NoError(t, err)
	for i := range 500 {
		require.NoError(t, f.Forward(context.Background(), cancelled(i)))
	}
	// Invalid events are refused at once, not queued.
	assert.ErrorIs(t, f.Forward(context.Background(), events.OrderCancelled{}), events.ErrInvalid)
	require.NoError(t, f.Close(context.Background()))
	assert.Len(t, rec.Messages(), 500, "Close drains the queue")
	assert.Equal(t, bridge.Stats{Enqueued: 500, Published: 500}, f.Stats())
	assert.ErrorIs(t, f.Forward(context.Background(), cancelled(0)), broker.ErrClosed)
	assert.NoError(t, f.Close(context.Background()), "second Close")
}

// blocking holds every publish until released or its ctx ends.
type blocking struct {
	release chan struct{}
	started atomic.Int32
}

func (b *blocking) Publish(ctx context.Context, _ broker.Message) error {
	b.started.Add(1)
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: ctx.Err()}
	}
}
func (b *blocking) Close(context.Context) error { return nil }

func TestAsyncQueueFullBlocksNeverDrops(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	f, err := bridge.NewForwarder(b, bridge.WithAsync(1, 2))
	require.NoError(t, err)
	for i := range 3 { // one with the worker, two queued
		require.NoError(t, f.Forward(context.Background(), cancelled(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = f.Forward(ctx, cancelled(3))
	require.Error(t, err, "a full queue makes the caller wait, then says the event was not accepted")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "not accepted")
	close(b.release)
	require.NoError(t, f.Close(context.Background()))
	assert.Equal(t, int64(3), f.Stats().Published)
}

func TestAsyncCloseDeadLettersLeftovers(t *testing.T) {
	b := &blocking{release: make(chan struct{})} // the broker is down: nothing completes
	sink := &memSink{}
	var reported atomic.Int32
	f, err := bridge.NewForwarder(b, bridge.WithAsync(2, 100), bridge.WithDeadLetter(sink),
		bridge.WithOnError(func(broker.Message, error) { reported.Add(1) }))
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, f.Forward(context.Background(), cancelled(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = f.Close(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	st := f.Stats()
	assert.Equal(t, int64(50), st.Enqueued)
	assert.Equal(t, st.Enqueued, st.Published+st.DeadLettered+st.Failed, "every event is accounted for")
	assert.Equal(t, int64(50), st.DeadLettered)
	assert.Len(t, sink.ids(), 50, "each event in the sink once")
	assert.Equal(t, int32(50), reported.Load())
}

func TestAsyncFailureWithoutSinkIsReported(t *testing.T) {
	rec := &brokertest.Recorder{Fail: func(broker.Message) error {
		return &broker.Error{Op: "test", Kind: broker.ErrUnroutable, Err: errors.New("no queue")}
	}}
	var mu sync.Mutex
	var errs []error
	f, err := bridge.NewForwarder(rec, bridge.WithAsync(0, 0), bridge.WithOnError(func(_ broker.Message, err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}))
	require.NoError(t, err)
	require.NoError(t, f.Forward(context.Background(), cancelled(1)))
	require.NoError(t, f.Close(context.Background()))
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], broker.ErrUnroutable)
	assert.Equal(t, int64(1), f.Stats().Failed)
}

func TestWithAsyncBadOptions(t *testing.T) {
	for name, opts := range map[string][]bridge.Option{
		"negative workers":          {bridge.WithAsync(-1, 0)},
		"dead letter without async": {bridge.WithDeadLetter(&memSink{})},
		"nil sink":                  {bridge.WithAsync(0, 0), bridge.WithDeadLetter(nil)},
		"zero timeout":              {bridge.WithAsync(0, 0), bridge.WithPublishTimeout(0)},
	} {
		_, err := bridge.NewForwarder(&brokertest.Recorder{}, opts...)
		assert.ErrorIs(t, err, broker.ErrInvalid, name)
	}
}

// TestAsyncKeepsPerKeyOrder: 16 workers, 10,000 events over 100 order ids,
// publishes that take a random time: each order's events reach the broker
// in the order they were forwarded.
func TestAsyncKeepsPerKeyOrder(t *testing.T) {
	rec := &brokertest.Recorder{Fail: func(broker.Message) error {
		time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) // publishes finish out of order
		return nil
	}}
	var next atomic.Int64
	seq := events.Stamper{NewID: func() string { return fmt.Sprintf("e-%05d", next.Add(1)) }}
	f, err := bridge.NewForwarder(rec, bridge.WithAsync(16, 256), bridge.WithStamper(seq))
	require.NoError(t, err)
	const keys, each = 100, 100
	want := map[string][]string{} // order id -> event ids in forward order
	for i := range keys * each {
		e := events.OrderStatusUpdated{OrderID: fmt.Sprintf("o-%03d", i%keys), UserID: "u", OldStatus: "created", NewStatus: "in_progress"}
		want[e.OrderID] = append(want[e.OrderID], fmt.Sprintf("e-%05d", i+1))
		require.NoError(t, f.Forward(context.Background(), e))
	}
	require.NoError(t, f.Close(context.Background()))
	got := map[string][]string{}
	for _, m := range rec.Messages() {
		got[m.Key] = append(got[m.Key], m.ID)
	}
	inversions := 0
	for k, ids := range want {
		if !slices.Equal(ids, got[k]) {
			inversions++
		}
	}
	assert.Zero(t, inversions, "of %d order ids, %d came out of order", keys, inversions)
	assert.Len(t, rec.Messages(), keys*each)
}

// slowSink takes a second per entry unless its ctx ends first.
type slowSink struct{ n atomic.Int32 }

func (s *slowSink) Put(ctx context.Context, _ broker.DeadLetter) error {
	s.n.Add(1)
	select {
	case <-time.After(time.Second):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestAsyncCloseHonoursContextWithASlowSink: Close's ctx bounds the
// dead-letter writes of what is left, too: a 200ms Close with 20 events and
// a sink that takes a second each returns in about 200ms, every event
// accounted for (dead-lettered or failed, reported).
func TestAsyncCloseHonoursContextWithASlowSink(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	var reported atomic.Int32
	f, err := bridge.NewForwarder(b, bridge.WithAsync(2, 100), bridge.WithDeadLetter(&slowSink{}),
		bridge.WithOnError(func(broker.Message, error) { reported.Add(1) }))
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, f.Forward(context.Background(), cancelled(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, f.Close(ctx), context.DeadlineExceeded)
	took := time.Since(start)
	t.Logf("Close(200ms) with a slow sink took %v", took)
	assert.Less(t, took, 2*time.Second)
	st := f.Stats()
	assert.Equal(t, st.Enqueued, st.Published+st.DeadLettered+st.Failed, "every event accounted for")
	assert.Equal(t, int32(20), reported.Load())
}
