package rabbitmq_test

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
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// queueDepth is how many ready messages queue holds.
func (f *fixture) queueDepth(t testing.TB, queue string) int {
	t.Helper()
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

// A subscriber's dead letters go back to the exchange with their event
// name as the routing key, selected by name, id or reason; a dry run and
// the unselected ones leave the dead-letter queue as it was.
func TestRedriveSubscriberDLQ(t *testing.T) {
	for _, typ := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(typ), func(t *testing.T) {
			checkNoLeak(t)
			f := newFixture(t)
			b := f.open(t, rabbitAddr())
			var down atomic.Bool
			down.Store(true)
			var mu sync.Mutex
			handled := map[string]broker.Delivery{}
			f.subscribeType(t, rabbitAddr(), typ, func(_ context.Context, d broker.Delivery) error {
				if down.Load() {
					if d.Name == "order.cancelled" {
						return &broker.Error{Op: "decode", Kind: broker.ErrInvalid, Err: errors.New("undecodable body")}
					}
					return errors.New("inventory service down")
				}
				mu.Lock()
				handled[d.ID] = d
				mu.Unlock()
				return nil
			}, rabbitmq.WithMaxAttempts(2), rabbitmq.WithRetryBackoff(20*time.Millisecond, 40*time.Millisecond))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var created []broker.Message
			for range 3 {
				m := brokertest.NewMessage("order.created")
				m.Headers = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
				created = append(created, m)
				require.NoError(t, b.Publish(ctx, m))
			}
			cancelled := brokertest.NewMessage("order.cancelled")
			require.NoError(t, b.Publish(ctx, cancelled))
			dlq := f.sub() + ".dlq"
			waitFor(t, time.Minute, "four dead letters", func() bool { return f.queueDepth(t, dlq) == 4 })
			cfg := f.config(rabbitAddr())

			res, err := rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{DryRun: true})
			require.NoError(t, err)
			assert.Equal(t, 4, res.Scanned)
			require.Len(t, res.Selected, 4)
			assert.Zero(t, res.Moved)
			for _, s := range res.Selected {
				assert.Equal(t, broker.Destination{System: "rabbitmq", Name: f.exchange, RoutingKey: s.Message.Name}, s.To)
				assert.NotContains(t, s.Message.Headers, broker.HeaderDeadLetterReason)
				assert.NotContains(t, s.Message.Headers, rabbitmq.HeaderOriginalRoutingKey)
				assert.NoError(t, s.Err)
				if s.Message.Name == "order.created" {
					assert.Equal(t, "inventory service down", s.Reason)
					assert.Equal(t, broker.CategoryHandlerFailed, s.Category)
					assert.Equal(t, 2, s.Attempts)
					assert.Equal(t, created[0].Headers["traceparent"], s.Message.Headers["traceparent"])
				} else {
					assert.Equal(t, broker.CategoryInvalid, s.Category)
				}
			}
			waitFor(t, time.Minute, "a dry run leaves them all", func() bool { return f.queueDepth(t, dlq) == 4 })

			for _, c := range []struct {
				name string
				o    broker.RedriveOptions
				want int
			}{
				{"name", broker.RedriveOptions{Name: "order.cancelled", DryRun: true}, 1},
				{"id", broker.RedriveOptions{ID: created[1].ID, DryRun: true}, 1},
				{"reason", broker.RedriveOptions{Reason: "INVENTORY", DryRun: true}, 3},
				{"category", broker.RedriveOptions{Reason: "invalid", DryRun: true}, 1},
				{"limit", broker.RedriveOptions{Limit: 2, DryRun: true}, 2},
				{"nothing", broker.RedriveOptions{Name: "order.unknown", DryRun: true}, 0},
			} {
				waitFor(t, time.Minute, "the previous run's messages back", func() bool { return f.queueDepth(t, dlq) == 4 })
				res, err := rabbitmq.Redrive(ctx, cfg, dlq, c.o)
				require.NoError(t, err, c.name)
				assert.Len(t, res.Selected, c.want, c.name)
			}

			down.Store(false)
			waitFor(t, time.Minute, "the previous run's messages back", func() bool { return f.queueDepth(t, dlq) == 4 })
			res, err = rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{Name: "order.created"})
			require.NoError(t, err)
			assert.Equal(t, 3, res.Moved)
			assert.Zero(t, res.Failed())
			waitFor(t, time.Minute, "three handled again", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(handled) == 3
			})
			mu.Lock()
			for _, m := range created {
				d := handled[m.ID]
				assert.Equal(t, 1, d.Attempt, "handled from attempt 1")
				assert.Equal(t, "order.created", d.Origin.RoutingKey)
				assert.Equal(t, f.exchange, d.Origin.Exchange)
				assert.Equal(t, m.Body, d.Body)
				assert.Equal(t, m.Headers, d.Headers, "its own headers, none of the dead letter's")
			}
			mu.Unlock()
			waitFor(t, time.Minute, "the unselected one stays", func() bool { return f.queueDepth(t, dlq) == 1 })
			res, err = rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{DryRun: true})
			require.NoError(t, err)
			require.Len(t, res.Selected, 1)
			assert.Equal(t, cancelled.ID, res.Selected[0].Message.ID)
		})
	}
}

// The publisher's dead letters (NewDeadLetterSink, "<exchange>.dlq") go
// back to the exchange; one whose exchange is gone stays, and the error
// says why.
func TestRedriveSinkDLQ(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr()) // declares the exchange and f.queue, bound to everything
	cfg := f.config(rabbitAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sink, err := rabbitmq.NewDeadLetterSink(ctx, cfg, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	dlq := f.exchange + ".dlq"
	t.Cleanup(func() {
		ch, err := f.admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		_, _ = ch.QueueDelete(dlq, false, false, false)
		_ = ch.ExchangeDelete(f.exchange+".dlx", false, false)
	})
	m := brokertest.NewMessage("order.created")
	require.NoError(t, sink.Put(ctx, broker.DeadLetter{Message: m, Reason: "nacked 10 times", Category: broker.CategoryUnavailable, Attempts: 10}))
	require.NoError(t, sink.Close(ctx))
	require.NoError(t, b.Close(ctx))

	gone := f.config(rabbitAddr())
	gone.Exchange = f.exchange + ".gone" // for a message that does not say where it goes: none here
	res, err := rabbitmq.Redrive(ctx, gone, dlq, broker.RedriveOptions{})
	require.NoError(t, err)
	require.Len(t, res.Selected, 1)
	assert.Equal(t, broker.Destination{System: "rabbitmq", Name: f.exchange, RoutingKey: "order.created"}, res.Selected[0].To,
		"the sink says where the message was going")
	assert.Equal(t, "nacked 10 times", res.Selected[0].Reason)
	assert.Equal(t, 1, res.Moved)
	got, err := f.receiver(t)(ctx, []string{m.ID})
	require.NoError(t, err)
	assert.Equal(t, m.Body, got[m.ID].Body)
	assert.NotContains(t, got[m.ID].Headers, broker.HeaderDeadLetterReason)
	assert.Zero(t, f.queueDepth(t, dlq))

	// A dead letter with no queue bound for its routing key stays, and so
	// does one whose exchange no longer exists, each with the reason.
	ch, err := f.admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	_, err = ch.QueueDelete(f.queue, false, false, false)
	require.NoError(t, err)
	sink, err = rabbitmq.NewDeadLetterSink(ctx, cfg, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	require.NoError(t, sink.Put(ctx, broker.DeadLetter{Message: brokertest.NewMessage("order.created"), Reason: "x"}))
	require.NoError(t, sink.Close(ctx))
	res, err = rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{})
	require.NoError(t, err)
	require.Len(t, res.Selected, 1)
	assert.ErrorIs(t, res.Selected[0].Err, broker.ErrUnroutable)
	assert.Contains(t, res.Selected[0].Err.Error(), "no queue bound for routing key \"order.created\"")
	assert.Equal(t, 1, res.Failed())
	assert.Zero(t, res.Moved)
	waitFor(t, time.Minute, "it stays", func() bool { return f.queueDepth(t, dlq) == 1 })

	require.NoError(t, ch.ExchangeDelete(f.exchange, false, false))
	res, err = rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{})
	require.ErrorIs(t, err, broker.ErrUnroutable, "the exchange is gone: nothing more can be moved")
	require.Len(t, res.Selected, 1)
	assert.ErrorIs(t, res.Selected[0].Err, broker.ErrUnroutable)
	assert.Zero(t, res.Moved)
	waitFor(t, time.Minute, "it stays", func() bool { return f.queueDepth(t, dlq) == 1 })

	_, err = rabbitmq.Redrive(ctx, cfg, f.exchange+".nosuch.dlq", broker.RedriveOptions{})
	require.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), ".nosuch.dlq")
	_, err = rabbitmq.Redrive(ctx, cfg, dlq, broker.RedriveOptions{Limit: -1})
	require.ErrorIs(t, err, broker.ErrInvalid)
}
