package rabbitmq_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

// rabbitAddr is the test server: RABBITMQ_ADDR or 127.0.0.1:5672 (guest/guest).
func rabbitAddr() string { return rabbittest.Addr() }

// requireRabbit returns an admin connection to the test server. Without a
// server it skips on a laptop and fails in CI (CI=true).
func requireRabbit(t testing.TB) *amqp.Connection { return rabbittest.RequireRabbit(t) }

// fixture is a fresh exchange and a queue bound to it with "#".
type fixture struct {
	admin    *amqp.Connection
	exchange string
	queue    string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	admin := requireRabbit(t)
	id := uuid.NewString()[:8]
	f := &fixture{admin: admin, exchange: "det.test." + id, queue: "det.test." + id + ".q"}
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{f.sub(), f.sub() + ".retry", f.sub() + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_, _ = ch.QueueDelete(f.queue, false, false, false)
		_, _ = ch.QueueDelete(f.exchange+".unroutable", false, false, false)
		_ = ch.ExchangeDelete(f.exchange, false, false)
		_ = ch.ExchangeDelete(f.exchange+".unroutable", false, false)
	})
	return f
}

func (f *fixture) config(addr string) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Addresses = []string{addr}
	cfg.Exchange = f.exchange
	return cfg
}

// open connects a Broker through addr with the fixture's queue bound.
func (f *fixture) open(t testing.TB, addr string, opts ...rabbitmq.PublisherOption) *rabbitmq.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]rabbitmq.PublisherOption{rabbitmq.WithQueue(rabbitmq.Queue{Name: f.queue}), rabbitmq.WithLogger(testLogger(t))}, opts...)
	b, err := rabbitmq.New(ctx, f.config(addr), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// sub is the name of the subscriber's queue.
func (f *fixture) sub() string { return f.queue + ".sub" }

// subscribe consumes the fixture's exchange through addr into h, on the
// queue f.sub() bound with "#".
func (f *fixture) subscribe(t testing.TB, addr string, h broker.Handler, opts ...rabbitmq.SubscriberOption) *rabbitmq.Subscriber {
	t.Helper()
	return f.subscribeType(t, addr, rabbitmq.Classic, h, opts...)
}

// subscribeType is subscribe with a queue of the given type.
func (f *fixture) subscribeType(t testing.TB, addr string, typ rabbitmq.QueueType, h broker.Handler, opts ...rabbitmq.SubscriberOption) *rabbitmq.Subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]rabbitmq.SubscriberOption{rabbitmq.WithLogger(testLogger(t))}, opts...)
	s, err := rabbitmq.NewSubscriber(ctx, f.config(addr), rabbitmq.Queue{Name: f.sub(), Type: typ}, h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// drain reads the queue until want ids are seen or ctx ends; it returns
// every delivery by message id (duplicates counted in dups).
func (f *fixture) drain(ctx context.Context, t testing.TB, want []string) (got map[string]amqp.Delivery, dups int, err error) {
	t.Helper()
	ch, err := f.admin.Channel()
	if err != nil {
		return nil, 0, err
	}
	defer ch.Close()
	if err := ch.Qos(1000, 0, false); err != nil {
		return nil, 0, err
	}
	deliveries, err := ch.ConsumeWithContext(ctx, f.queue, "", true, false, false, false, nil)
	if err != nil {
		return nil, 0, err
	}
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	got = map[string]amqp.Delivery{}
	for len(missing) > 0 {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return got, dups, fmt.Errorf("consumer closed with %d missing", len(missing))
			}
			if _, seen := got[d.MessageId]; seen {
				dups++
			}
			got[d.MessageId] = d
			delete(missing, d.MessageId)
		case <-ctx.Done():
			return got, dups, fmt.Errorf("%d of %d messages missing: %w", len(missing), len(want), ctx.Err())
		}
	}
	return got, dups, nil
}

// countExtra reads whatever else is in the queue within quiet, for
// counting duplicates after the wanted ids arrived.
func (f *fixture) countRest(t testing.TB, seen map[string]amqp.Delivery) (dups, unknown int) {
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	for {
		d, ok, err := ch.Get(f.queue, true)
		require.NoError(t, err)
		if !ok {
			return dups, unknown
		}
		if _, ok := seen[d.MessageId]; ok {
			dups++
		} else {
			unknown++
		}
	}
}

// receiver adapts drain to the conformance suite.
func (f *fixture) receiver(t testing.TB) brokertest.Receiver {
	return func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
		got, _, err := f.drain(ctx, t, ids)
		out := map[string]broker.Message{}
		for id, d := range got {
			m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, ContentType: d.ContentType, Time: d.Timestamp}
			if len(d.Headers) > 0 {
				m.Headers = map[string]string{}
				for k, v := range d.Headers {
					m.Headers[k] = fmt.Sprint(v)
				}
			}
			out[id] = m
		}
		return out, err
	}
}

// dlqReceiver reads the subscriber's dead-letter queue (f.sub()+".dlq").
func (f *fixture) dlqReceiver(t testing.TB) brokertest.Receiver {
	return func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
		ch, err := f.admin.Channel()
		if err != nil {
			return nil, err
		}
		defer ch.Close()
		out := map[string]broker.Message{}
		for {
			missing := false
			for _, id := range ids {
				if _, ok := out[id]; !ok {
					missing = true
				}
			}
			if !missing {
				return out, nil
			}
			d, ok, err := ch.Get(f.sub()+".dlq", true)
			if err != nil {
				return out, err
			}
			if !ok {
				select {
				case <-ctx.Done():
					return out, ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, Headers: map[string]string{}}
			for k, v := range d.Headers {
				m.Headers[k] = fmt.Sprint(v)
			}
			out[m.ID] = m
		}
	}
}

func testLogger(t testing.TB) *slog.Logger { return brokertest.Logger(t) }

// newProxy is a loopback fault proxy in front of the test server.
func newProxy(t testing.TB) *rabbittest.Proxy { return rabbittest.NewProxy(t, rabbitAddr()) }

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, d, what, cond)
}

func checkNoLeak(t testing.TB) { brokertest.CheckNoLeak(t) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
