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

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
)

// recorder is a broker.Observer that keeps the kinds it saw.
type recorder struct {
	mu    sync.Mutex
	kinds []broker.ObservationKind
}

func (r *recorder) Observe(_ context.Context, o broker.Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kinds = append(r.kinds, o.Kind)
}

func (r *recorder) seen(k broker.ObservationKind) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Issue 11.4: a service starts while its cluster refuses connections. New
// returns at once; 1,000 publishes wait; the cluster comes up; every one is
// acknowledged and stored exactly once, without a restart.
func TestLazyConnectStartsWhileClusterDown(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	c.needFake(t)
	c.ln.each(func(l *faultListener) { l.cut(true) })
	var obs recorder
	start := time.Now()
	b := c.open(t, topic, kafka.WithLazyConnect(), kafka.WithObserver(&obs),
		kafka.WithConnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	assert.Less(t, time.Since(start), 2*time.Second, "New does not wait for the cluster")
	ctx := context.Background()
	err := b.Health(ctx)
	assert.ErrorIs(t, err, broker.ErrUnavailable)

	// A publish whose ctx ends meanwhile was not sent.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = b.Publish(short, brokertest.NewMessage("order.created"))
	cancel()
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown)

	const n = 1000
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Int32
	long, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i := range n {
		m := brokertest.NewMessage("order.created")
		ids[i] = m.ID
		wg.Go(func() {
			if err := b.Publish(long, m); err != nil {
				failed.Add(1)
				t.Errorf("publish %s: %v", m.ID, err)
			}
		})
	}
	waitFor(t, 10*time.Second, "the publishes to wait", func() bool { return b.Stats().Waiting == n })
	waitFor(t, 10*time.Second, "a failed attempt observed", func() bool { return obs.seen(broker.ObservedDisconnected) })
	c.ln.each(func(l *faultListener) { l.refusing.Store(false) })
	wg.Wait()
	require.NoError(t, b.Health(ctx))
	assert.True(t, obs.seen(broker.ObservedConnected))

	got, err := c.readBack(long, t, ids, topic)
	require.NoError(t, err)
	dups := 0
	for _, id := range ids {
		dups += len(got[id]) - 1
	}
	t.Logf("published=%d acked=%d stored=%d duplicates=%d", n, n-int(failed.Load()), len(got), dups)
	assert.Zero(t, failed.Load())
	assert.Zero(t, dups)
}

// A lazy subscriber joins once the cluster lets it.
func TestLazySubscriberJoinsLater(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	c.needFake(t)
	b := c.open(t, topic)
	m := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(context.Background(), m))

	c.ln.each(func(l *faultListener) { l.cut(true) })
	var got atomic.Value
	s := c.subscribe(t, topic, "lazy", func(_ context.Context, d broker.Delivery) error { got.Store(d.ID); return nil },
		kafka.WithLazyConnect(), kafka.WithConnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	assert.ErrorIs(t, s.Health(context.Background()), broker.ErrUnavailable)
	c.ln.each(func(l *faultListener) { l.refusing.Store(false) })
	waitFor(t, 20*time.Second, "the record handled", func() bool { return got.Load() == m.ID })
	waitFor(t, 10*time.Second, "healthy", func() bool { return s.Health(context.Background()) == nil })
}

// Issue 15.5: Close(300ms) returns soon after its ctx ends although the
// handler ignores its own ctx; the record is not marked, so the next member
// of the group handles it again.
func TestSubscriberCloseDoesNotWaitForStuckHandler(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	b := c.open(t, topic)
	m := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(context.Background(), m))

	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := kafka.NewSubscriber(ctx, c.config(topic), "stuck", func(context.Context, broker.Delivery) error {
		once.Do(func() { close(started) })
		<-release // ignores its ctx
		return nil
	}, kafka.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer close(release)
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the handler never ran")
	}
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer closeCancel()
	begin := time.Now()
	err = s.Close(closeCtx)
	took := time.Since(begin)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, 2*time.Second, "Close returns when its ctx ends")
	t.Logf("Close(300ms) with a stuck handler returned after %v", took.Round(time.Millisecond))

	var again atomic.Value
	c.subscribe(t, topic, "stuck", func(_ context.Context, d broker.Delivery) error { again.Store(d.ID); return nil })
	waitFor(t, 30*time.Second, "the abandoned record handled by the next member", func() bool { return again.Load() == m.ID })
}

// Health of a connected publisher and subscriber, and after Close.
func TestHealth(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"})
	b := c.open(t, topic)
	s := c.subscribe(t, topic, "health", func(context.Context, broker.Delivery) error { return nil })
	var hb, hs broker.HealthChecker = b, s
	require.NoError(t, hb.Health(context.Background()))
	waitFor(t, 20*time.Second, "the subscriber's session", func() bool { return s.Health(context.Background()) == nil })
	require.NoError(t, b.Close(context.Background()))
	require.NoError(t, s.Close(context.Background()))
	assert.ErrorIs(t, hb.Health(context.Background()), broker.ErrClosed)
	assert.ErrorIs(t, hs.Health(context.Background()), broker.ErrClosed)
	var be *broker.Error
	require.True(t, errors.As(b.Health(context.Background()), &be))
	assert.Equal(t, "kafka: publish", be.Op)
}
