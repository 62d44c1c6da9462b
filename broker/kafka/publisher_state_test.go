package kafka

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// The Broker's state machine on a fake producer: every ordering that
// matters, with -race, no server and no sleeps.

func checkNoLeak(t *testing.T) { brokertest.CheckNoLeak(t, "go-metrics.(*meterArbiter)") }

// publishAsync starts a Publish and returns where its error will arrive.
func publishAsync(ctx context.Context, b *Broker, m broker.Message) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- b.Publish(ctx, m) }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Publish did not return")
		return nil
	}
}

func headerOf(m *sarama.ProducerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestStatePublishAcked(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, client := fakeBroker(t, p, nil)
	m := brokertest.NewMessage("order.created")
	done := publishAsync(context.Background(), b, m)
	rec := p.take(t)
	assert.Equal(t, m.ID, headerOf(rec, HeaderID))
	assert.Equal(t, int64(1), b.Stats().InFlight, "handed over, not yet acknowledged")
	p.ack(rec)
	require.NoError(t, waitErr(t, done))
	assert.Equal(t, Stats{Published: 1, Acked: 1}, b.Stats())
	require.NoError(t, b.Health(context.Background()))

	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
	assert.Equal(t, int32(1), client.closes.Load())
}

// Each sarama failure reaches the caller in its category, with Op
// "kafka: publish", the topic in the text and the sarama error reachable.
func TestStatePublishErrorCategories(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, _ := fakeBroker(t, p, nil)
	defer func() {
		go p.done()
		_ = b.Close(context.Background())
	}()
	for _, tc := range []struct {
		cause error
		want  error
	}{
		{sarama.ErrNotEnoughReplicas, broker.ErrUnavailable},
		{sarama.ErrOutOfBrokers, broker.ErrUnavailable},
		{sarama.ErrMessageSizeTooLarge, broker.ErrTooLarge},
		{sarama.ErrUnknownTopicOrPartition, broker.ErrUnroutable},
		{sarama.ErrInvalidRecord, broker.ErrInvalid},
		{sarama.ErrTopicAuthorizationFailed, broker.ErrUnauthorized},
		{sarama.ErrDuplicateSequenceNumber, broker.ErrRejected},
		{sarama.ErrShuttingDown, broker.ErrClosed},
	} {
		t.Run(tc.cause.Error(), func(t *testing.T) {
			done := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
			p.fail(p.take(t), tc.cause)
			err := waitErr(t, done)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			assert.ErrorIs(t, err, tc.cause)
			assert.Equal(t, broker.Category(tc.want), broker.Category(err))
			// Handed over, failed after sarama's retries: an unavailable
			// cluster may have written it; a refusal did not.
			assert.Equal(t, tc.want == broker.ErrUnavailable, errors.Is(err, broker.ErrOutcomeUnknown), "ErrOutcomeUnknown")
			var be *broker.Error
			require.ErrorAs(t, err, &be)
			assert.Equal(t, "kafka: publish", be.Op)
			assert.Contains(t, err.Error(), `"orders.events"`)
		})
	}
	assert.Equal(t, int64(0), b.Stats().InFlight)
	assert.Equal(t, int64(8), b.Stats().Failed)
}

// The ctx ends while Publish waits to hand the record over: not sent.
func TestStateCtxEndsBeforeHandOver(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, _ := fakeBroker(t, p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := publishAsync(ctx, b, brokertest.NewMessage("order.created"))
	p.waitAsked(t) // Publish is at the hand-over; nobody takes the record
	cancel()
	err := waitErr(t, done)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown, "the record was never sent")
	assert.Contains(t, err.Error(), "not sent")
	assert.Equal(t, Stats{}, b.Stats())

	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
}

// The ctx ends after the hand-over: outcome unknown; the late
// acknowledgement is absorbed and the next record flows.
func TestStateCtxEndsAfterHandOver(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, _ := fakeBroker(t, p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	m := brokertest.NewMessage("order.created")
	done := publishAsync(ctx, b, m)
	rec := p.take(t)
	cancel()
	err := waitErr(t, done)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, broker.ErrOutcomeUnknown, "the record may still be written")
	assert.True(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), m.ID)

	p.ack(rec) // nobody waits for it any more
	brokertest.WaitFor(t, 10*time.Second, "the late acknowledgement counted", func() bool { return b.Stats().InFlight == 0 })
	next := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	p.ack(p.take(t))
	require.NoError(t, waitErr(t, next))

	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
}

// Results of records this Broker did not produce are ignored.
func TestStateUnknownResultIgnored(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, _ := fakeBroker(t, p, nil)
	p.ack(&sarama.ProducerMessage{Topic: "orders.events"})
	p.ack(&sarama.ProducerMessage{Topic: "orders.events", Metadata: "someone else's"})
	p.ack(&sarama.ProducerMessage{Topic: "orders.events", Metadata: make(chan error, 1)})
	p.errs <- &sarama.ProducerError{Err: sarama.ErrOutOfBrokers}
	p.errs <- nil
	p.fail(&sarama.ProducerMessage{Topic: "orders.events", Metadata: 42}, sarama.ErrOutOfBrokers)
	done := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	p.ack(p.take(t))
	require.NoError(t, waitErr(t, done))
	assert.Equal(t, Stats{Published: 1, Acked: 1}, b.Stats(), "foreign results are not counted")
	require.NoError(t, b.Health(context.Background()), "a foreign failure says nothing about ours")

	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
}

// Close with records in flight waits for each outcome; every caller gets
// its own; Close returns nil; then Publish says ErrClosed and a second
// Close nil.
func TestStateCloseWithRecordsInFlight(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, client := fakeBroker(t, p, nil)
	var waits []<-chan error
	var recs []*sarama.ProducerMessage
	for range 3 {
		waits = append(waits, publishAsync(context.Background(), b, brokertest.NewMessage("order.created")))
		recs = append(recs, p.take(t))
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with three records in flight", err)
	default:
	}
	p.ack(recs[0])
	p.fail(recs[1], sarama.ErrMessageSizeTooLarge)
	p.ack(recs[2])
	p.done()
	require.NoError(t, waitErr(t, closed))
	require.NoError(t, waitErr(t, waits[0]))
	assert.ErrorIs(t, waitErr(t, waits[1]), broker.ErrTooLarge)
	require.NoError(t, waitErr(t, waits[2]))
	assert.Equal(t, int32(1), client.closes.Load())

	err := b.Publish(context.Background(), brokertest.NewMessage("order.created"))
	assert.ErrorIs(t, err, broker.ErrClosed)
	assert.False(t, broker.IsRetryable(err))
	assert.ErrorIs(t, b.Health(context.Background()), broker.ErrClosed)
	require.NoError(t, b.Close(context.Background()), "second Close")
}

// A Publish waiting at the hand-over when Close begins gets ErrClosed.
func TestStateCloseReleasesWaitingPublish(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, _ := fakeBroker(t, p, nil)
	done := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	p.waitAsked(t)
	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	err := waitErr(t, done)
	assert.ErrorIs(t, err, broker.ErrClosed)
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
}

// Close's ctx ends before the outcomes are known: Close returns ctx.Err();
// the callers still waiting learn that Close gave up (ErrClosed, and the
// outcome is unknown); the producer drains later and the client is closed.
func TestStateCloseCtxEndsFirst(t *testing.T) {
	checkNoLeak(t)
	p := newFakeProducer(false)
	b, client := fakeBroker(t, p, nil)
	w1 := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	r1 := p.take(t)
	w2 := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	r2 := p.take(t)

	ctx, cancel := context.WithCancel(context.Background())
	closed := make(chan error, 1)
	go func() { closed <- b.Close(ctx) }()
	p.waitClosed(t)
	cancel()
	assert.ErrorIs(t, waitErr(t, closed), context.Canceled)
	for _, w := range []<-chan error{w1, w2} {
		err := waitErr(t, w)
		assert.ErrorIs(t, err, broker.ErrClosed)
		assert.ErrorIs(t, err, broker.ErrUnavailable)
		assert.ErrorIs(t, err, broker.ErrOutcomeUnknown)
		assert.False(t, broker.IsRetryable(err), "ErrClosed is never retryable")
	}
	assert.Zero(t, client.closes.Load(), "the producer has not drained yet")
	p.ack(r1)
	p.fail(r2, sarama.ErrOutOfBrokers)
	p.done()
	brokertest.WaitFor(t, 10*time.Second, "the client closed after the drain", func() bool { return client.closes.Load() == 1 })
	require.NoError(t, b.Close(context.Background()), "second Close")
}

// Lazy connect: New returns at once; Publish waits for the connection;
// Health names the last error; the Observer hears of the outage and the
// connection.
func TestStateLazyConnectPublishWaits(t *testing.T) {
	checkNoLeak(t)
	var obs observations
	d := newScriptedDial()
	o := defaultPublisher()
	o.connOptions = testConn(t, &obs)
	o.lazy = true
	b, err := start(context.Background(), o, []string{"k1:9092"}, "orders.events", "kafka publisher", d.dial)
	require.NoError(t, err)

	done := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	d.waitDialing(t)
	d.answers <- dialResult{err: wrap(opConnect, sarama.ErrOutOfBrokers, "brokers %v", []string{"k1:9092"})}
	d.waitDialing(t) // the first failure is recorded before the second dial
	health := b.Health(context.Background())
	assert.ErrorIs(t, health, broker.ErrUnavailable)
	assert.Contains(t, health.Error(), "run out of available brokers")
	assert.Equal(t, []broker.ObservationKind{broker.ObservedDisconnected}, obs.kinds())
	d.answers <- dialResult{err: wrap(opConnect, sarama.ErrOutOfBrokers, "brokers %v", []string{"k1:9092"})}
	d.waitDialing(t)
	brokertest.WaitFor(t, 10*time.Second, "Publish waiting for the connection", func() bool { return b.Stats().Waiting == 1 })

	p := newFakeProducer(false)
	d.answers <- dialResult{link: producerLink{producer: p, client: &fakeClient{}}}
	p.ack(p.take(t))
	require.NoError(t, waitErr(t, done))
	require.NoError(t, b.Health(context.Background()))
	assert.Equal(t, []broker.ObservationKind{broker.ObservedDisconnected, broker.ObservedConnected}, obs.kinds())
	assert.Equal(t, 3, obs.of(broker.ObservedConnected)[0].Attempt)
	assert.Equal(t, "kafka publisher", obs.all[0].Component)

	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	p.waitClosed(t)
	p.done()
	require.NoError(t, waitErr(t, closed))
}

// A Publish whose ctx ends while waiting for the connection was not sent.
func TestStateLazyConnectCtxEndsWhileWaiting(t *testing.T) {
	checkNoLeak(t)
	d := newScriptedDial()
	o := defaultPublisher()
	o.connOptions = testConn(t, nil)
	o.lazy = true
	b, err := start(context.Background(), o, []string{"k1:9092"}, "orders.events", "kafka publisher", d.dial)
	require.NoError(t, err)
	d.waitDialing(t)
	d.answers <- dialResult{err: wrap(opConnect, errors.New("connection refused"), "brokers [k1:9092]")}
	d.waitDialing(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := publishAsync(ctx, b, brokertest.NewMessage("order.created"))
	brokertest.WaitFor(t, 10*time.Second, "Publish waiting for the connection", func() bool { return b.Stats().Waiting == 1 })
	cancel()
	err = waitErr(t, done)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown)
	assert.Contains(t, err.Error(), "connection refused", "the error names why it waited")

	// Close while the loop is dialing: it stops; the dial's late result is
	// closed, not installed.
	waiting := publishAsync(context.Background(), b, brokertest.NewMessage("order.created"))
	brokertest.WaitFor(t, 10*time.Second, "Publish waiting for the connection", func() bool { return b.Stats().Waiting == 1 })
	require.NoError(t, b.Close(context.Background()))
	assert.ErrorIs(t, waitErr(t, waiting), broker.ErrClosed)
	late, client := newFakeProducer(true), &fakeClient{}
	d.answers <- dialResult{link: producerLink{producer: late, client: client}}
	late.waitClosed(t)
	brokertest.WaitFor(t, 10*time.Second, "the late connection closed", func() bool { return client.closes.Load() == 1 })
	assert.ErrorIs(t, b.Health(context.Background()), broker.ErrClosed)
}

// New without WithLazyConnect: an error retrying cannot heal fails at once;
// a retryable one is retried until ctx ends, naming the last error.
func TestStateEagerConnect(t *testing.T) {
	checkNoLeak(t)
	o := defaultPublisher()
	o.connOptions = testConn(t, nil)
	dials := 0
	_, err := start(context.Background(), o, []string{"k1:9092"}, "orders.events", "kafka publisher", func() (producerLink, error) {
		dials++
		return producerLink{}, wrap(opConnect, sarama.ErrSASLAuthenticationFailed, "brokers [k1:9092]")
	})
	assert.ErrorIs(t, err, broker.ErrUnauthorized)
	assert.Equal(t, 1, dials, "not retried")

	ctx, cancel := context.WithCancel(context.Background())
	dials = 0
	_, err = start(ctx, o, []string{"k1:9092"}, "orders.events", "kafka publisher", func() (producerLink, error) {
		dials++
		if dials == 3 {
			cancel()
		}
		return producerLink{}, wrap(opConnect, sarama.ErrOutOfBrokers, "brokers [k1:9092]")
	})
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "run out of available brokers")
	assert.Contains(t, err.Error(), "k1:9092")
	var be *broker.Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, "kafka: connect", be.Op)
}

// The connect loop logs its first failure at Warn, then at most every 30s
// (nothing in between), whatever the error.
func TestStateConnectLogThrottled(t *testing.T) {
	var logs capture
	o := testConn(t, nil)
	o.logger = slog.New(&logs)
	n := 0
	c := newConnector("kafka publisher", []string{"k1:9092"}, "orders.events", o, func() (int, error) {
		n++
		switch {
		case n == 7:
			return 1, nil
		case n == 5:
			return 0, wrap(opConnect, sarama.ErrSASLAuthenticationFailed, "")
		}
		return 0, wrap(opConnect, sarama.ErrOutOfBrokers, "")
	}, nil)
	clock := time.Unix(0, 0)
	c.now = func() time.Time { clock = clock.Add(10 * time.Second); return clock }
	_, err := c.run(context.Background(), false)
	require.NoError(t, err)
	// Failures at 10s (logged), 20s, 30s, 40s (logged: 30s since), 50s
	// (not healable, but 10s since), 60s.
	const msg = "kafka: cluster not reachable, retrying"
	assert.Equal(t, 2, logs.count(slog.LevelWarn, msg), "first failure, then after 30s")
	assert.Zero(t, logs.count(slog.LevelDebug, msg), "not every attempt")
	assert.Equal(t, 7, c.tried())
}
