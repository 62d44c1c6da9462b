package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/backoff"
)

// A partition's records on lanes (WithConcurrency), on the fake consumer
// group: the commit point, per-key order, rebalances and the window.

// keyed is a record of key at offset, its id "<key>/<n>" (n: its number
// within the key).
func keyed(key string, n int, offset int64) *sarama.ConsumerMessage {
	m := brokertest.NewMessage("order.status.updated")
	m.Key, m.ID = key, fmt.Sprintf("%s/%d", key, n)
	return consumerMessage(m, offset)
}

// feed sends records to g from a goroutine of its own (g.msgs holds 100),
// joined at the end of the test.
func feed(t *testing.T, g *fakeGroup, ms []*sarama.ConsumerMessage) {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for _, m := range ms {
			select {
			case g.msgs <- m:
			case <-stop:
				return
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
}

func withConcurrency(n int) func(*Subscriber) {
	return func(s *Subscriber) { s.opts.concurrency = n }
}

// keyJournal records handler calls per key and catches two of one key at
// once.
type keyJournal struct {
	mu      sync.Mutex
	running map[string]bool
	calls   map[string][]string // ids, in call order
	overlap int
}

func (j *keyJournal) enter(d broker.Delivery) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.running == nil {
		j.running, j.calls = map[string]bool{}, map[string][]string{}
	}
	if j.running[d.Key] {
		j.overlap++
	}
	j.running[d.Key] = true
	j.calls[d.Key] = append(j.calls[d.Key], d.ID)
}

func (j *keyJournal) leave(d broker.Delivery) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key] = false
}

// The commit point stays below the lowest unfinished record while the
// records after it, of other keys, are handled; it moves past all of them
// once that record finishes.
func TestStateClaimCommitsLowestUnfinished(t *testing.T) {
	checkNoLeak(t)
	release := make(chan struct{})
	h := func(_ context.Context, d broker.Delivery) error {
		if d.Key == "slow" {
			<-release
		}
		return nil
	}
	g := newFakeGroup()
	s, _, _ := fakeSubscriber(t, g, h, nil, 3, withConcurrency(4))
	ms := []*sarama.ConsumerMessage{keyed("slow", 0, 0)}
	for i := 1; i < 10; i++ {
		ms = append(ms, keyed(fmt.Sprintf("k%d", i), 0, int64(i)))
	}
	feed(t, g, ms)
	brokertest.WaitFor(t, time.Minute, "the nine fast records handled", func() bool { return s.Stats().Handled == 9 })
	assert.Equal(t, int64(-1), g.committed(), "nothing is marked while offset 0 runs")
	close(release)
	brokertest.WaitFor(t, time.Minute, "the commit point past every record", func() bool { return g.committed() == 10 })
	closeSub(t, s)
}

// Many keys, handlers of random length, a tenth of first attempts failing:
// each key's records are handled in order, one at a time, while the
// handlers run in parallel, and every offset ends committed.
func TestStateClaimKeyOrderWithRetries(t *testing.T) {
	checkNoLeak(t)
	const keys, per = 40, 25
	var j keyJournal
	var par, maxPar atomic.Int64
	h := func(_ context.Context, d broker.Delivery) error {
		j.enter(d)
		defer j.leave(d)
		n := par.Add(1)
		defer par.Add(-1)
		for {
			m := maxPar.Load()
			if n <= m || maxPar.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Duration(len(d.ID)%3) * 100 * time.Microsecond) // some work
		if d.Attempt == 1 && (len(d.ID)+int(d.ID[len(d.ID)-1]))%10 == 0 {
			return errors.New("transient")
		}
		return nil
	}
	g := newFakeGroup()
	s, _, _ := fakeSubscriber(t, g, h, nil, 5, withConcurrency(8))
	var ms []*sarama.ConsumerMessage
	for n := range per {
		for k := range keys {
			ms = append(ms, keyed(fmt.Sprintf("key-%02d", k), n, int64(len(ms))))
		}
	}
	feed(t, g, ms)
	brokertest.WaitFor(t, time.Minute, "every offset committed", func() bool { return g.committed() == int64(len(ms)) })
	assert.IsIncreasing(t, g.markedOffsets())
	j.mu.Lock()
	defer j.mu.Unlock()
	assert.Zero(t, j.overlap, "two handlers of one key at once")
	inversions := 0
	for k := range keys {
		key := fmt.Sprintf("key-%02d", k)
		last := -1
		for _, id := range j.calls[key] {
			var n int
			_, _ = fmt.Sscanf(id[len(key)+1:], "%d", &n)
			if n < last {
				inversions++
			}
			last = n
		}
	}
	assert.Zero(t, inversions, "a key's records out of order")
	assert.Positive(t, s.Stats().Retried)
	assert.Greater(t, maxPar.Load(), int64(1), "the handlers ran in parallel")
	t.Logf("records=%d retried=%d max parallel=%d", len(ms), s.Stats().Retried, maxPar.Load())
	closeSub(t, s)
}

// A rebalance lets the running handler finish (its record is marked) and
// abandons the records waiting behind it or for a retry: they are not
// marked, so the partition's next owner handles them.
func TestStateClaimRebalanceAbandonsWaiting(t *testing.T) {
	checkNoLeak(t)
	inside, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	calls := map[string]int{}
	h := func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		calls[d.ID]++
		mu.Unlock()
		switch d.ID {
		case "a/0":
			close(inside)
			<-release
		case "b/0":
			return errors.New("fails: retried in an hour")
		}
		return nil
	}
	g := newFakeGroup()
	var logs capture
	s, _, _ := fakeSubscriber(t, g, h, nil, 5, withConcurrency(2), func(s *Subscriber) {
		s.retry = backoff.Policy{Initial: time.Hour, Max: time.Hour}
		s.log = slog.New(&logs)
	})
	feed(t, g, []*sarama.ConsumerMessage{keyed("a", 0, 0), keyed("a", 1, 1), keyed("b", 0, 2), keyed("c", 0, 3)})
	<-inside
	brokertest.WaitFor(t, time.Minute, "b waiting for its retry, c handled", func() bool {
		st := s.Stats()
		return st.Retried == 1 && st.Handled == 1
	})
	g.rebalance()
	brokertest.WaitFor(t, time.Minute, "the claim ending", func() bool { return logs.count(slog.LevelDebug, "kafka: claim ending") == 1 })
	assert.Equal(t, int32(1), g.calls.Load(), "the session waits for the running handler")
	close(release)
	brokertest.WaitFor(t, time.Minute, "the next session", func() bool { return g.calls.Load() == 2 })
	assert.Equal(t, int64(1), g.committed(), "a/0 finished and marked; a/1 and b/0 abandoned below c/0")
	mu.Lock()
	assert.Zero(t, calls["a/1"], "not started after the rebalance")
	assert.Equal(t, 1, calls["b/0"], "its retry not run after the rebalance")
	mu.Unlock()
	closeSub(t, s)
}

// A handler that ignores its ctx holds a rebalance only up to the
// group's rebalance timeout: its ctx is cancelled, its record is not
// marked, the next session starts, and Close waits for that handler.
func TestStateClaimRevokeTimeout(t *testing.T) {
	checkNoLeak(t)
	inside, release := make(chan struct{}), make(chan struct{})
	var stuckCtx context.Context
	h := func(ctx context.Context, d broker.Delivery) error {
		if d.ID == "stuck/0" {
			stuckCtx = ctx
			close(inside)
			<-release // ignores ctx
		}
		return nil
	}
	g := newFakeGroup()
	s, client, _ := fakeSubscriber(t, g, h, nil, 3, withConcurrency(2), func(s *Subscriber) { s.revokeWait = time.Millisecond })
	feed(t, g, []*sarama.ConsumerMessage{keyed("stuck", 0, 0), keyed("other", 0, 1)})
	<-inside
	brokertest.WaitFor(t, time.Minute, "the other record handled", func() bool { return s.Stats().Handled == 1 })
	g.rebalance()
	brokertest.WaitFor(t, time.Minute, "the next session, without the stuck handler", func() bool { return g.calls.Load() == 2 })
	assert.ErrorIs(t, stuckCtx.Err(), context.Canceled, "the stuck handler's ctx was cancelled")
	assert.Equal(t, int64(-1), g.committed(), "the stuck record is not marked")
	assert.Equal(t, int64(1), s.Stats().InFlight)

	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	brokertest.WaitFor(t, time.Minute, "the group left", func() bool { return client.closes.Load() == 1 })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler of a revoked claim ran", err)
	default:
	}
	close(release)
	require.NoError(t, waitErr(t, closed))
	assert.Zero(t, s.Stats().InFlight)
	assert.Equal(t, int64(-1), g.committed(), "its late success is not marked: the claim is gone")
}

// At WithConcurrency(1) the claim's feed runs handlers itself: a stuck
// one still lets the rebalance go on after the timeout (its ctx
// cancelled, its record not marked), the next session starts, and Close
// waits for it.
func TestStateClaimRevokeTimeoutInline(t *testing.T) {
	checkNoLeak(t)
	inside, release := make(chan struct{}), make(chan struct{})
	var stuckCtx context.Context
	h := func(ctx context.Context, d broker.Delivery) error {
		if d.ID == "stuck/1" {
			stuckCtx = ctx
			close(inside)
			<-release // ignores ctx
		}
		return nil
	}
	g := newFakeGroup()
	s, client, _ := fakeSubscriber(t, g, h, nil, 3, func(s *Subscriber) { s.revokeWait = time.Millisecond })
	require.Equal(t, 1, s.opts.concurrency)
	feed(t, g, []*sarama.ConsumerMessage{keyed("other", 0, 0), keyed("stuck", 1, 1)})
	<-inside
	brokertest.WaitFor(t, time.Minute, "the first record committed", func() bool { return g.committed() == 1 })
	g.rebalance()
	brokertest.WaitFor(t, time.Minute, "the next session, without the stuck handler", func() bool { return g.calls.Load() == 2 })
	assert.ErrorIs(t, stuckCtx.Err(), context.Canceled, "the stuck handler's ctx was cancelled")
	assert.Equal(t, int64(1), g.committed(), "the stuck record is not marked")

	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	brokertest.WaitFor(t, time.Minute, "the group left", func() bool { return client.closes.Load() == 1 })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler of a revoked claim ran", err)
	default:
	}
	close(release)
	require.NoError(t, waitErr(t, closed))
	assert.Zero(t, s.Stats().InFlight)
	assert.Equal(t, int64(1), g.committed(), "its late success is not marked: the claim is gone")
}

func TestCooperative(t *testing.T) {
	assert.False(t, cooperative(nil))
	assert.False(t, cooperative([]sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}))
	assert.True(t, cooperative([]sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}))
	assert.False(t, cooperative([]sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky(), sarama.NewBalanceStrategySticky()}))
}

// The partition stops fetching once minUncommitted records are past its
// commit point (one record held, the others handled), and goes on once
// the held one finishes.
func TestStateClaimWindow(t *testing.T) {
	checkNoLeak(t)
	release := make(chan struct{})
	h := func(_ context.Context, d broker.Delivery) error {
		if d.Key == "held" {
			<-release
		}
		return nil
	}
	g := newFakeGroup()
	s, _, _ := fakeSubscriber(t, g, h, nil, 3, withConcurrency(4))
	ms := []*sarama.ConsumerMessage{keyed("held", 0, 0)}
	const total = minUncommitted + 200
	for i := 1; i < total; i++ {
		ms = append(ms, keyed(fmt.Sprintf("k%d", i%50), i, int64(i)))
	}
	feed(t, g, ms)
	brokertest.WaitFor(t, time.Minute, "the window full and the fetch stopped", func() bool {
		return s.Stats().Handled == minUncommitted-1 && len(g.msgs) == cap(g.msgs)
	})
	assert.Equal(t, int64(minUncommitted-1), s.Stats().Handled, "no record past the window taken")
	assert.Equal(t, int64(-1), g.committed())
	close(release)
	brokertest.WaitFor(t, time.Minute, "every record handled and committed", func() bool { return g.committed() == total })
	closeSub(t, s)
}
