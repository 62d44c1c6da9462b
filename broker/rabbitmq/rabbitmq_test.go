package rabbitmq_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/testenv"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Harness {
		f := newFixture(t)
		p := newProxy(t) // the broker is reached through a fault proxy, to cut it off
		b := f.open(t, p.Addr(), rabbitmq.WithHeartbeat(time.Second),
			rabbitmq.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond))
		ps := newProxy(t) // the key-ordered subscriber's
		return brokertest.Harness{
			Broker:  b,
			Receive: f.receiver(t),
			Subscribe: func(h broker.Handler) (broker.Subscriber, error) {
				return f.subscribe(t, rabbitAddr(), h, rabbitmq.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond)), nil
			},
			DeadLetters: f.dlqReceiver(t),
			SubscribeKeyOrdered: func(h broker.Handler) (broker.Subscriber, error) {
				return f.subscribe(t, ps.Addr(), h, rabbitmq.WithConcurrency(16), rabbitmq.WithRetryBackoff(5*time.Millisecond, 50*time.Millisecond),
					rabbitmq.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond)), nil
			},
			CutSubscriber: func() {
				if ps.Cut() == 0 {
					t.Error("the subscriber had no connection to cut")
				}
			},
			Unroutable: func() (broker.Broker, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cfg := f.config(rabbitAddr())
				cfg.Exchange += ".unroutable" // no queue bound to it
				return rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(testLogger(t)))
			},
			Disconnect: func() func() {
				p.Refuse()
				waitFor(t, 10*time.Second, "the loss noticed", func() bool { return b.Health(context.Background()) != nil })
				return p.Accept
			},
			Silence: func() func() {
				p.Blackhole() // the heartbeat finds the silent connection dead; a new one works
				return func() {}
			},
		}
	})
}

func TestMessageProperties(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	m := brokertest.NewMessage("order.status.updated")
	m.Headers = map[string]string{"trace": "t-1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, m))

	got, _, err := f.drain(ctx, t, []string{m.ID})
	require.NoError(t, err)
	d := got[m.ID]
	assert.Equal(t, uint8(amqp.Persistent), d.DeliveryMode, "delivery mode 2")
	assert.Equal(t, "application/json", d.ContentType)
	assert.Equal(t, m.ID, d.MessageId)
	assert.Equal(t, "order.status.updated", d.Type)
	assert.Equal(t, "order.status.updated", d.RoutingKey)
	assert.Equal(t, f.exchange, d.Exchange)
	assert.Equal(t, m.Time.Unix(), d.Timestamp.Unix())
	assert.Equal(t, "t-1", d.Headers["trace"])
	assert.Equal(t, m.Key, d.Headers[broker.HeaderKey], "the aggregate key as a header")
	assert.Equal(t, m.Body, d.Body)
}

func TestUnroutableIsAnError(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, f.config(rabbitAddr()), rabbitmq.WithLogger(testLogger(t))) // no queue bound
	require.NoError(t, err)
	defer b.Close(ctx)

	err = b.Publish(ctx, brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.False(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), `"order.created"`)

	// Routed messages on the same channel still succeed afterwards.
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	_, err = ch.QueueDeclare(f.queue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(f.queue, "order.#", f.exchange, false, nil))
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
	err = b.Publish(ctx, brokertest.NewMessage("invoice.paid"))
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Equal(t, int64(2), b.Stats().Returned)
}

// An alternate exchange catches what no queue is bound for. It is an
// argument of the exchange: a subscriber given the same option declares the
// exchange alike, starts and receives; one not given it (another team's
// service, say) starts on the exchange as it is and receives too.
func TestAlternateExchangeCatchesUnroutable(t *testing.T) {
	f := newFixture(t)
	ae := f.exchange + ".unroutable"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, f.config(rabbitAddr()), rabbitmq.WithAlternateExchange(ae), rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer b.Close(ctx)
	early := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(ctx, early), "an alternate exchange makes the event routed")

	var mu sync.Mutex
	got, plain := map[string]int{}, map[string]int{}
	other, err := rabbitmq.NewSubscriber(ctx, f.config(rabbitAddr()), rabbitmq.Queue{Name: f.sub() + ".plain", Keys: []string{"#"}},
		func(_ context.Context, d broker.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			plain[d.Message.ID]++
			return nil
		}, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err, "a subscriber not given the exchange's alternate starts")
	defer other.Close(ctx)

	f.subscribe(t, rabbitAddr(), func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got[d.Message.ID]++
		return nil
	}, rabbitmq.WithAlternateExchange(ae))
	m := brokertest.NewMessage("order.created")
	require.NoError(t, b.Publish(ctx, m))
	waitFor(t, 10*time.Second, "both subscribers receive the event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[m.ID] == 1 && plain[m.ID] == 1
	})

	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	waitFor(t, 10*time.Second, "the event published before any binding in the alternate queue", func() bool {
		d, ok, err := ch.Get(ae, true)
		return err == nil && ok && d.MessageId == early.ID
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, got[early.ID]+plain[early.ID], "the early event went to the alternate queue only")
}

// A nack (a full queue with reject-publish here; a quorum queue electing
// its leader on a cluster) is transient: retryable, so the retry layer
// tries again and, if it lasts, spools the event rather than dropping it.
func TestNackIsRetryable(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr(), rabbitmq.WithQueue(rabbitmq.Queue{
		Name: f.queue + ".full", Keys: []string{"order.created"},
		Args: amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"},
	}))
	t.Cleanup(func() {
		ch, err := f.admin.Channel()
		if err == nil {
			_, _ = ch.QueueDelete(f.queue+".full", false, false, false)
			ch.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
	err := b.Publish(ctx, brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.True(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), "nacked")
	assert.Equal(t, int64(1), b.Stats().Nacked)
}

func TestTooLarge(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr(), rabbitmq.WithMaxMessageSize(1024))
	m := brokertest.NewMessage("order.created")
	m.Body = make([]byte, 1025)
	err := b.Publish(context.Background(), m)
	assert.ErrorIs(t, err, broker.ErrTooLarge)
	assert.ErrorContains(t, err, "1025")
}

// A field longer than an AMQP short string fails that message alone, at
// once, as invalid; the connection and the messages after it go on.
func TestShortStringTooLong(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	long := strings.Repeat("x", 256)
	for what, change := range map[string]func(*broker.Message){
		"routing key": func(m *broker.Message) { m.Name = long },
		"ID":          func(m *broker.Message) { m.ID = long },
		"ContentType": func(m *broker.Message) { m.ContentType = long },
		"header name": func(m *broker.Message) { m.Headers = map[string]string{long: "v"} },
	} {
		m := brokertest.NewMessage("order.created")
		change(&m)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := b.Publish(ctx, m)
		cancel()
		require.ErrorIs(t, err, broker.ErrInvalid, what)
		assert.Contains(t, err.Error(), what)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
	assert.Zero(t, b.Stats().Reconnects)
}

func TestConnectErrors(t *testing.T) {
	f := newFixture(t)
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	fanout := f.exchange + ".fanout"
	require.NoError(t, ch.ExchangeDeclare(fanout, "fanout", false, true, false, false, nil))
	t.Cleanup(func() { _ = ch.ExchangeDelete(fanout, false, false) })

	tests := []struct {
		name    string
		mutate  func(*broker.Config)
		opts    []rabbitmq.PublisherOption
		kind    error
		mention string
	}{
		{"wrong password", func(c *broker.Config) { c.Password = broker.NewSecret("hunter2-wrong") }, nil, broker.ErrUnauthorized, "password"},
		{"unknown user", func(c *broker.Config) { c.Username = "nobody" }, nil, broker.ErrUnauthorized, ""},
		{"missing vhost", func(c *broker.Config) { c.VHost = "no-such-vhost-" + uuid.NewString()[:6] }, nil, broker.ErrUnauthorized, "virtual host"},
		{"exchange type mismatch", func(c *broker.Config) { c.Exchange = fanout }, nil, broker.ErrInvalid, "different type"},
		{"passive, missing exchange", func(c *broker.Config) { c.Exchange = "det.missing." + uuid.NewString()[:6] },
			[]rabbitmq.PublisherOption{rabbitmq.WithPassive()}, broker.ErrUnroutable, "does not exist"},
		{"bad option", nil, []rabbitmq.PublisherOption{rabbitmq.WithWindow(0)}, broker.ErrInvalid, "WithWindow"},
		{"bad URL", nil, []rabbitmq.PublisherOption{rabbitmq.WithURLs("http://user:hunter2@x")}, broker.ErrInvalid, "URL #1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			var logs bytes.Buffer
			cfg := f.config(rabbitAddr())
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			opts := append([]rabbitmq.PublisherOption{rabbitmq.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}, tt.opts...)
			b, err := rabbitmq.New(ctx, cfg, opts...)
			require.Error(t, err)
			require.Nil(t, b)
			assert.Less(t, time.Since(start), 8*time.Second, "must not hang until the deadline")
			if tt.kind != nil {
				assert.ErrorIs(t, err, tt.kind)
			}
			assert.False(t, broker.IsRetryable(err), "%v", err)
			assert.Contains(t, err.Error(), tt.mention)
			assert.NotContains(t, err.Error(), "hunter2")
			assert.NotContains(t, logs.String(), "hunter2")
			assert.NotContains(t, logs.String(), "guest:guest")
		})
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	checkNoLeak(t)
	p := newProxy(t)
	p.Refuse()
	cfg := broker.DefaultConfig()
	cfg.Addresses = []string{p.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(testLogger(t)))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.True(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), p.Addr())
}

func TestClusterAddressesTriedInTurn(t *testing.T) {
	f := newFixture(t)
	dead := newProxy(t)
	dead.Refuse()
	live := newProxy(t)
	cfg := f.config("")
	cfg.Addresses = []string{dead.Addr(), live.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, cfg, rabbitmq.WithQueue(rabbitmq.Queue{Name: f.queue}), rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer b.Close(ctx)
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
}

// TestOutage: while the broker is unreachable, publishes wait for the
// reconnect up to their ctx. Short ctx: retryable ErrUnavailable. Long ctx:
// success once the broker is back.
func TestOutage(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr(), rabbitmq.WithReconnectBackoff(50*time.Millisecond, 200*time.Millisecond))
	ctx := context.Background()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))

	p.Refuse()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := b.Publish(short, brokertest.NewMessage("order.created"))
	cancel()
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, broker.IsRetryable(err))

	long, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok atomic.Int32
	ids := make([]string, 20)
	for i := range ids {
		m := brokertest.NewMessage("order.created")
		ids[i] = m.ID
		wg.Go(func() {
			if err := b.Publish(long, m); err == nil {
				ok.Add(1)
			} else {
				t.Errorf("publish during outage: %v", err)
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // the outage lasts a while; nothing waits on this
	p.Accept()
	wg.Wait()
	assert.Equal(t, int32(len(ids)), ok.Load())
	_, _, err = f.drain(long, t, ids)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, b.Stats().Reconnects, int64(1))
}

// TestBlackholeDetectedByHeartbeat: a connection that silently stops
// carrying traffic is detected (heartbeat) and replaced.
func TestBlackholeDetectedByHeartbeat(t *testing.T) {
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr(), rabbitmq.WithHeartbeat(time.Second), rabbitmq.WithReconnectBackoff(50*time.Millisecond, 200*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))

	require.Equal(t, 1, p.Blackhole())
	m := brokertest.NewMessage("order.created")
	start := time.Now()
	require.NoError(t, b.Publish(ctx, m), "published after the dead connection was replaced")
	t.Logf("black hole detected and message confirmed after %v", time.Since(start))
	assert.GreaterOrEqual(t, b.Stats().Reconnects, int64(1))
	_, _, err := f.drain(ctx, t, []string{m.ID})
	require.NoError(t, err)
}

// TestNothingLostWhenConnectionsAreCut is the reliability proof: 20,000
// events (4,000 outside the long test tier) from 32 goroutines while the
// proxy cuts every connection five times. Every event whose Publish
// returned nil must be in the queue.
func TestNothingLostWhenConnectionsAreCut(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr(), rabbitmq.WithReconnectBackoff(20*time.Millisecond, 200*time.Millisecond))

	const publishers = 32
	each := testenv.Count(125, 625)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var (
		mu        sync.Mutex
		confirmed []string
		failed    []error
		sent      atomic.Int64
	)
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for range each {
				m := brokertest.NewMessage("order.created")
				// A bounded ctx per publish: an outage must not hang a caller.
				pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
				err := b.Publish(pctx, m)
				pcancel()
				sent.Add(1)
				mu.Lock()
				if err == nil {
					confirmed = append(confirmed, m.ID)
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
			}
		})
	}
	cuts := 0
	for _, tenth := range []int64{1, 3, 5, 7, 9} {
		at := int64(publishers*each) * tenth / 10
		waitFor(t, time.Minute, "publishing progress", func() bool { return sent.Load() >= at })
		if p.Cut() > 0 {
			cuts++
		}
	}
	wg.Wait()
	st := b.Stats()

	got, dups, err := f.drain(ctx, t, confirmed)
	require.NoError(t, err, "every confirmed event must be in the queue")
	moreDups, unknown := f.countRest(t, got)
	dups += moreDups
	t.Logf("published=%d confirmed=%d failed=%d cuts=%d reconnects=%d republished=%d found=%d duplicates=%d unconfirmed-but-stored=%d",
		publishers*each, len(confirmed), len(failed), cuts, st.Reconnects, st.Republished, len(got), dups, unknown)
	assert.Empty(t, failed, "with a 30s ctx nothing should fail")
	assert.GreaterOrEqual(t, cuts, 3)
	assert.GreaterOrEqual(t, st.Reconnects, int64(cuts))
}

func TestCloseHonoursContextDuringOutage(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr())
	p.Refuse()
	errc := make(chan error, 1)
	go func() { errc <- b.Publish(context.Background(), brokertest.NewMessage("order.created")) }()
	waitFor(t, 5*time.Second, "publish in flight", func() bool { return b.Stats().Published == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, b.Close(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 3*time.Second)
	err := <-errc
	assert.ErrorIs(t, err, broker.ErrClosed, "the waiting caller learns its message was not confirmed")
	// Written to the dying connection before its loss was noticed: the
	// outcome is unknown; waiting for a new one: not sent. Either is said.
	if errors.Is(err, broker.ErrOutcomeUnknown) {
		assert.ErrorIs(t, err, broker.ErrUnavailable)
		assert.Contains(t, err.Error(), "may or may not")
	} else {
		assert.Contains(t, err.Error(), "could be sent")
	}
}

// TestPublishBoundedWhenBrokerStopsReading: a broker that stops reading the
// socket (RabbitMQ blocks publishers on a memory or disk alarm) leaves one
// publish stuck in a write; every other publish must still give up when its
// ctx ends, not queue behind it.
func TestPublishBoundedWhenBrokerStopsReading(t *testing.T) {
	f := newFixture(t)
	p := newProxy(t)
	b := f.open(t, p.Addr(), rabbitmq.WithMaxMessageSize(4<<20))
	require.NoError(t, b.Publish(context.Background(), brokertest.NewMessage("order.created")))
	require.Equal(t, 1, p.Stall(true))

	const publishers = 32
	var wg sync.WaitGroup
	var slow, failed atomic.Int32
	for range publishers {
		wg.Go(func() {
			m := brokertest.NewMessage("order.created")
			m.Body = make([]byte, 1<<20) // fills the socket buffers quickly
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := b.Publish(ctx, m)
			if time.Since(start) > 2*time.Second {
				slow.Add(1)
			}
			if err != nil {
				assert.ErrorIs(t, err, broker.ErrUnavailable)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, slow.Load(), "publishes waited far past their ctx")
	assert.Equal(t, int32(publishers), failed.Load(), "nothing can be confirmed by a broker that does not read")

	p.Stall(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")), "publishing resumes")
}
