package outbox_test

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
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// failFirst fails each message's first n publishes with err(m), then lets
// it through.
func failFirst(n int, err func(broker.Message) error) *brokertest.Recorder {
	var mu sync.Mutex
	tries := map[string]int{}
	return &brokertest.Recorder{Fail: func(m broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		tries[m.ID]++
		if tries[m.ID] <= n {
			return err(m)
		}
		return nil
	}}
}

// The broker's failures never make a row dead, however many: each kind
// fails a row five times with WithMaxAttempts(2), and the row is still
// published, with every attempt counted.
func TestBrokerFailuresNeverKillARow(t *testing.T) {
	kinds := map[string]func(broker.Message) error{
		"unavailable": func(broker.Message) error {
			return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: errors.New("connection refused")}
		},
		"outcome unknown": func(broker.Message) error {
			return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: fmt.Errorf("%w: %w", broker.ErrOutcomeUnknown, context.DeadlineExceeded)}
		},
		"deadline": func(broker.Message) error { return context.DeadlineExceeded },
		"closed, outcome unknown": func(broker.Message) error {
			return &broker.Error{Op: "test", Kind: broker.ErrClosed, Err: fmt.Errorf("%w: %w", broker.ErrUnavailable, broker.ErrOutcomeUnknown)}
		},
		"unroutable":   func(broker.Message) error { return &broker.Error{Op: "test", Kind: broker.ErrUnroutable} },
		"unauthorized": func(broker.Message) error { return &broker.Error{Op: "test", Kind: broker.ErrUnauthorized} },
		"rejected":     func(broker.Message) error { return &broker.Error{Op: "test", Kind: broker.ErrRejected} },
	}
	for name, kind := range kinds {
		t.Run(name, func(t *testing.T) {
			db := dbtest.OpenSQLite(t)
			s := newStore(t, db)
			m1, m2 := newMsg("k"), newMsg("k")
			write(t, s, m1, m2)
			rec := failFirst(5, kind)
			r := startRelay(t, s, rec, fastRelay(outbox.WithMaxAttempts(2), outbox.WithBrokerBackoff(20*time.Millisecond))...)
			brokertest.WaitFor(t, 30*time.Second, "both published", func() bool { return count(t, db, "state = 1") == 2 })
			assert.Zero(t, count(t, db, "state = 2"), "none dead")
			assert.Zero(t, r.Stats().DeadLettered)
			assert.Equal(t, 6, stateOf(t, db, m1.ID).Attempts, "every attempt counted")
			got := rec.Messages()
			require.Len(t, got, 2)
			assert.Equal(t, []string{m1.ID, m2.ID}, []string{got[0].ID, got[1].ID}, "in order")
		})
	}
}

// A refusal (unroutable, unauthorized, rejected) is a configuration
// problem: the key's rows stay pending, in order, Health says what is
// wrong with the broker's reason, the observer sees every retry with its
// category; other keys flow. Once fixed, the rows go out in order and
// Health clears.
func TestRefusalsAreHeldAndReported(t *testing.T) {
	for _, kind := range []error{broker.ErrUnroutable, broker.ErrUnauthorized, broker.ErrRejected} {
		t.Run(broker.Category(kind), func(t *testing.T) {
			db := dbtest.OpenSQLite(t)
			s := newStore(t, db)
			var fixed atomic.Bool
			rec := &brokertest.Recorder{Fail: func(m broker.Message) error {
				if m.Key == "held" && !fixed.Load() {
					return &broker.Error{Op: "test", Kind: kind, Err: errors.New("no binding for " + m.Name)}
				}
				return nil
			}}
			var retries atomic.Int64
			obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
				if o.Kind == broker.ObservedRetry && o.Category == broker.Category(kind) {
					retries.Add(1)
				}
			})
			held := []broker.Message{newMsg("held"), newMsg("held"), newMsg("held")}
			write(t, s, held...)
			free := newMsg("free")
			write(t, s, free)
			r := startRelay(t, s, rec, fastRelay(outbox.WithMaxAttempts(1), outbox.WithBrokerBackoff(50*time.Millisecond),
				outbox.WithObserver(obs), outbox.WithBacklogInterval(time.Hour))...)

			brokertest.WaitFor(t, 30*time.Second, "the free key published", func() bool { return stateOf(t, db, free.ID).State == 1 })
			brokertest.WaitFor(t, 30*time.Second, "the held head retried", func() bool { return stateOf(t, db, held[0].ID).Attempts >= 3 })
			err := r.Health(context.Background())
			require.ErrorIs(t, err, kind)
			assert.Contains(t, err.Error(), "no binding for order.created", "the broker's reason")
			assert.Contains(t, err.Error(), "published once this is fixed")
			assert.Positive(t, retries.Load(), "observed")
			for _, m := range held {
				assert.Equal(t, 0, stateOf(t, db, m.ID).State, "pending, not dead")
			}
			assert.Zero(t, stateOf(t, db, held[1].ID).Attempts, "the key waits behind its head")

			fixed.Store(true)
			brokertest.WaitFor(t, 30*time.Second, "the held rows published", func() bool { return count(t, db, "state = 1") == 4 })
			var order []string
			for _, m := range rec.Messages() {
				if m.Key == "held" {
					order = append(order, m.ID)
				}
			}
			assert.Equal(t, []string{held[0].ID, held[1].ID, held[2].ID}, order)
			brokertest.WaitFor(t, 60*time.Second, "Health clears once the refusals stop", func() bool { return r.Health(context.Background()) == nil })
			assert.Zero(t, r.Stats().DeadLettered)
		})
	}
}

// A message that makes Publish panic (a middleware's bug on it) does not
// take the process down: the panic is a failure that may be the message's
// own, dead-lettered at the WithMaxAttempts-th; other keys flow.
func TestPanicInPublishIsBounded(t *testing.T) {
	db := dbtest.OpenSQLite(t)
	s := newStore(t, db)
	poison, next, other := newMsg("p"), newMsg("p"), newMsg("o")
	write(t, s, poison, next, other)
	rec := &brokertest.Recorder{Fail: func(m broker.Message) error {
		if m.ID == poison.ID {
			panic("encoder bug")
		}
		return nil
	}}
	r := startRelay(t, s, rec, fastRelay(outbox.WithMaxAttempts(3))...)
	brokertest.WaitFor(t, 30*time.Second, "the rest published", func() bool { return count(t, db, "state = 1") == 2 })
	st := stateOf(t, db, poison.ID)
	assert.Equal(t, 2, st.State, "dead")
	assert.Equal(t, 3, st.Attempts)
	assert.Contains(t, st.LastError.String, "panicked: encoder bug")
	assert.NotContains(t, st.LastError.String, "\n", "one line: the stack is logged, not stored")
	assert.NotContains(t, st.LastError.String, "goroutine")
	assert.Equal(t, int64(1), r.Stats().DeadLettered)
}

// downBroker is a Recorder behind a switch: while down, Publish fails as
// unreachable and Health says so.
type downBroker struct {
	brokertest.Recorder
	down atomic.Bool
}

func (d *downBroker) Publish(ctx context.Context, m broker.Message) error {
	if d.down.Load() {
		return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: errors.New("connection refused")}
	}
	return d.Recorder.Publish(ctx, m)
}

func (d *downBroker) Health(context.Context) error {
	if d.down.Load() {
		return &broker.Error{Op: "test: health", Kind: broker.ErrUnavailable, Err: errors.New("not connected")}
	}
	return nil
}

// When the broker's Health says it is back, the rows waiting for it are
// made due at once: with a backoff of an hour, they are still published
// as soon as it returns. Meanwhile the relay's Health is the broker's.
func TestBrokerBackMakesWaitingRowsDue(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		b := &downBroker{}
		b.down.Store(true)
		var msgs []broker.Message
		for k := range 3 {
			for range 2 {
				msgs = append(msgs, newMsg(fmt.Sprintf("k%d", k)))
			}
		}
		write(t, s, msgs...)
		r := startRelay(t, s, b, fastRelay(outbox.WithBackoff(time.Hour, time.Hour), outbox.WithBrokerBackoff(time.Hour))...)
		brokertest.WaitFor(t, 30*time.Second, "every head failed", func() bool { return r.Stats().Retried >= 3 })
		err := r.Health(context.Background())
		require.ErrorIs(t, err, broker.ErrUnavailable)
		assert.Contains(t, err.Error(), "not connected")
		assert.NotErrorIs(t, err, outbox.ErrDatabase)

		b.down.Store(false)
		brokertest.WaitFor(t, 30*time.Second, "all published after the return", func() bool { return count(t, db, "state = 1") == len(msgs) })
		require.NoError(t, r.Health(context.Background()))
		assert.Zero(t, r.Stats().DeadLettered)
	})
}
