package kafka

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// The Subscriber's run loop and Close on a fake consumer group.

func closeSub(t *testing.T, s *Subscriber) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Close(ctx))
}

// A flaky handler is retried until it succeeds; one that keeps failing is
// dead-lettered after the last attempt, and poison at once, with
// FirstFailure set and where the record came from; the commit point only
// moves forward and ends past every record; the Observer and Stats hear of
// each retry and dead letter.
func TestStateSubscriberRetryAndDeadLetter(t *testing.T) {
	checkNoLeak(t)
	flaky, doomed, poison, fine := brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created"),
		brokertest.NewMessage("order.created"), brokertest.NewMessage("order.created")
	var mu sync.Mutex
	attempts := map[string][]int{}
	h := func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		attempts[d.ID] = append(attempts[d.ID], d.Attempt)
		n := len(attempts[d.ID])
		mu.Unlock()
		switch d.ID {
		case flaky.ID:
			if n < 3 {
				return errors.New("flaky")
			}
		case doomed.ID:
			return errors.New("inventory service down")
		case poison.ID:
			return &broker.Error{Op: "decode", Kind: broker.ErrInvalid, Err: errors.New("not json")}
		}
		return nil
	}
	var obs observations
	g := newFakeGroup()
	s, client, dlq := fakeSubscriber(t, g, h, &obs, 3)
	for i, m := range []broker.Message{flaky, doomed, poison, fine} {
		g.msgs <- consumerMessage(m, int64(i))
	}
	brokertest.WaitFor(t, 10*time.Second, "every offset finished", func() bool { m := g.markedOffsets(); return len(m) > 0 && m[len(m)-1] == 4 })
	marks := g.markedOffsets()
	assert.IsIncreasing(t, marks)
	mu.Lock()
	assert.Equal(t, []int{1, 2, 3}, attempts[flaky.ID])
	assert.Equal(t, []int{1, 2, 3}, attempts[doomed.ID])
	assert.Equal(t, []int{1}, attempts[poison.ID], "poison is not retried")
	mu.Unlock()

	got := map[string]*sarama.ProducerMessage{}
	for range 2 {
		m := <-dlq.taken
		got[headerOf(m, HeaderID)] = m
	}
	d, p := got[doomed.ID], got[poison.ID]
	require.NotNil(t, d)
	require.NotNil(t, p)
	assert.Equal(t, "orders.events.dlq", d.Topic)
	assert.Equal(t, broker.CategoryHandlerFailed, headerOf(d, broker.HeaderDeadLetterCategory))
	assert.Equal(t, "3", headerOf(d, broker.HeaderDeadLetterAttempts))
	assert.Contains(t, headerOf(d, broker.HeaderDeadLetterReason), "inventory service down")
	assert.NotEmpty(t, headerOf(d, broker.HeaderDeadLetterFirstFailure))
	assert.Equal(t, "orders.events", headerOf(d, HeaderOriginalTopic))
	assert.Equal(t, "0", headerOf(d, HeaderOriginalPartition))
	assert.Equal(t, "1", headerOf(d, HeaderOriginalOffset))
	assert.Equal(t, "2", headerOf(p, HeaderOriginalOffset))
	assert.Equal(t, broker.CategoryInvalid, headerOf(p, broker.HeaderDeadLetterCategory))
	assert.NotEmpty(t, headerOf(p, broker.HeaderDeadLetterFirstFailure), "FirstFailure set after one attempt too")

	assert.Len(t, obs.of(broker.ObservedRetry), 4)
	dls := obs.of(broker.ObservedDeadLetter)
	require.Len(t, dls, 2)
	assert.ElementsMatch(t, []string{broker.CategoryHandlerFailed, broker.CategoryInvalid}, []string{dls[0].Category, dls[1].Category})
	assert.Equal(t, "kafka subscriber", dls[0].Component)
	assert.Equal(t, SubscriberStats{Handled: 2, Retried: 4, DeadLettered: 2}, s.Stats())
	require.NoError(t, s.Health(context.Background()))

	closeSub(t, s)
	assert.Equal(t, int32(1), g.closed.Load())
	assert.Equal(t, int32(1), client.closes.Load())
	assert.ErrorIs(t, s.Health(context.Background()), broker.ErrClosed)
	require.NoError(t, s.Close(context.Background()), "second Close")
}

// Close lets a running handler finish, marks its record, then leaves.
func TestStateSubscriberCloseWaitsForHandler(t *testing.T) {
	checkNoLeak(t)
	started, release := make(chan struct{}), make(chan struct{})
	h := func(context.Context, broker.Delivery) error {
		close(started)
		<-release
		return nil
	}
	g := newFakeGroup()
	s, client, _ := fakeSubscriber(t, g, h, nil, 3)
	g.msgs <- consumerMessage(brokertest.NewMessage("order.created"), 7)
	<-started
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	brokertest.WaitFor(t, 10*time.Second, "Close to begin", func() bool { return s.Health(context.Background()) != nil })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler ran", err)
	default:
	}
	close(release)
	require.NoError(t, waitErr(t, closed))
	assert.Equal(t, []int64{8}, g.markedOffsets(), "the finished record is marked: the next offset to read is past it")
	assert.Equal(t, int32(1), client.closes.Load())
}

// Issue 15.5: a handler that ignores its ctx cannot hold Close past Close's
// ctx. Its ctx is cancelled, its record not marked, and nothing of ours
// outlives it.
func TestStateSubscriberCloseGivesUpOnStuckHandler(t *testing.T) {
	checkNoLeak(t)
	started, release := make(chan struct{}), make(chan struct{})
	var hctx context.Context
	h := func(ctx context.Context, _ broker.Delivery) error {
		hctx = ctx
		close(started)
		<-release // ignores ctx
		return nil
	}
	g := newFakeGroup()
	s, client, _ := fakeSubscriber(t, g, h, nil, 3)
	g.msgs <- consumerMessage(brokertest.NewMessage("order.created"), 3)
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctx) }()
	brokertest.WaitFor(t, 10*time.Second, "Close to begin", func() bool { return s.Health(context.Background()) != nil })
	cancel()
	assert.ErrorIs(t, waitErr(t, closed), context.Canceled)
	assert.ErrorIs(t, hctx.Err(), context.Canceled, "the handler's ctx was cancelled")
	brokertest.WaitFor(t, 10*time.Second, "the group left without the handler", func() bool { return client.closes.Load() == 1 })
	assert.Empty(t, g.markedOffsets(), "an abandoned record is not marked: the group redelivers it")
	assert.Equal(t, int64(1), s.Stats().InFlight, "the handler still runs")
	close(release)
	brokertest.WaitFor(t, 10*time.Second, "the handler's goroutine to end", func() bool { return s.Stats().InFlight == 0 })
}

// The consume loop's backoff grows with consecutive failures and starts
// over once a session is set up; Health and the Observer follow.
func TestStateConsumeBackoffGrowsAndResets(t *testing.T) {
	checkNoLeak(t)
	fail := func(context.Context, sarama.ConsumerGroupHandler) error { return sarama.ErrOutOfBrokers }
	var setUp sync.WaitGroup
	setUp.Add(1)
	shortSession := func(_ context.Context, h sarama.ConsumerGroupHandler) error {
		_ = h.Setup(&fakeSession{ctx: context.Background()})
		setUp.Done()
		return sarama.ErrNotCoordinatorForConsumer // ended badly, after a session was set up
	}
	var healthAfterFailure error
	var s *Subscriber
	check := func(ctx context.Context, h sarama.ConsumerGroupHandler) error {
		healthAfterFailure = s.Health(ctx)
		return sarama.ErrOutOfBrokers
	}
	g := newFakeGroup(fail, fail, fail, shortSession, fail, check)
	var obs observations
	var mu sync.Mutex
	var waits []int
	o := defaultSubscriber()
	o.connOptions = testConn(t, &obs)
	client := &fakeClient{}
	s = newSubscriber(o, "orders.events", "g", func(context.Context, broker.Delivery) error { return nil },
		[]string{"fake:9092"}, func() (groupLink, error) { return groupLink{group: g, client: client}, nil })
	s.rejoin = func(n int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, n)
		return 0
	}
	dlq, _ := fakeBroker(t, newFakeProducer(true), nil)
	s.dlq = dlq
	s.begin(&groupLink{group: g, client: client})
	brokertest.WaitFor(t, 10*time.Second, "a normal session after the script", func() bool { return g.calls.Load() == 7 && s.sessions.Load() == 2 })
	mu.Lock()
	assert.Equal(t, []int{1, 2, 3, 1, 2, 3}, waits, "grows, then starts over after a session")
	mu.Unlock()
	assert.ErrorIs(t, healthAfterFailure, broker.ErrUnavailable)
	assert.Contains(t, healthAfterFailure.Error(), "run out of available brokers")
	require.NoError(t, s.Health(context.Background()), "healthy once a session is set up")
	assert.Equal(t, []broker.ObservationKind{broker.ObservedDisconnected, broker.ObservedConnected,
		broker.ObservedDisconnected, broker.ObservedConnected}, obs.kinds())
	closeSub(t, s)
}

// Lazy connect: NewSubscriber's counterpart returns at once; Health says
// why it is not ready; Close while joining stops the loop, and a join that
// completes late is closed, not used.
func TestStateSubscriberLazyConnect(t *testing.T) {
	checkNoLeak(t)
	o := defaultSubscriber()
	o.connOptions = testConn(t, nil)
	o.lazy = true
	dialing, answers := make(chan struct{}, 10), make(chan error)
	g, client := newFakeGroup(), &fakeClient{}
	s := newSubscriber(o, "orders.events", "g", func(context.Context, broker.Delivery) error { return nil },
		[]string{"k1:9092"}, func() (groupLink, error) {
			dialing <- struct{}{}
			if err := <-answers; err != nil {
				return groupLink{}, err
			}
			return groupLink{group: g, client: client}, nil
		})
	dlq, _ := fakeBroker(t, newFakeProducer(true), nil)
	s.dlq = dlq
	s.begin(nil)
	<-dialing
	answers <- wrap(opConnect, sarama.ErrTopicAuthorizationFailed, "topic %q", "orders.events")
	<-dialing // retried: someone may grant the ACL
	err := s.Health(context.Background())
	assert.ErrorIs(t, err, broker.ErrUnauthorized, "a human must grant it: Health says so")
	assert.Contains(t, err.Error(), "not authorized")
	closeSub(t, s)
	answers <- nil
	brokertest.WaitFor(t, 10*time.Second, "the late group closed", func() bool { return g.closed.Load() == 1 && client.closes.Load() == 1 })
	assert.Zero(t, g.calls.Load(), "never consumed")
}
