package lanes_test

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

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lanes"
)

// wide is how long a test waits for something that normally takes
// milliseconds.
const wide = time.Minute

// journal records, per key, the order in which handler calls started and
// items were settled, and catches two calls of one key at once.
type journal struct {
	mu      sync.Mutex
	running map[string]int
	started map[string][]int // item numbers, by key, one per call
	settled map[string][]settled
	overlap int
	maxPar  int
	par     int
}

type settled struct {
	n int
	o lanes.Outcome
}

func newJournal() *journal {
	return &journal{running: map[string]int{}, started: map[string][]int{}, settled: map[string][]settled{}}
}

func (j *journal) enter(d broker.Delivery) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key]++
	if j.running[d.Key] > 1 {
		j.overlap++
	}
	j.par++
	j.maxPar = max(j.maxPar, j.par)
	j.started[d.Key] = append(j.started[d.Key], num(d))
}

func (j *journal) leave(d broker.Delivery) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key]--
	j.par--
}

func (j *journal) settle(it *lanes.Item[int], o lanes.Outcome) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.settled[it.Key] = append(j.settled[it.Key], settled{it.Value, o})
}

func (j *journal) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, s := range j.settled {
		n += len(s)
	}
	return n
}

func (j *journal) outcomes(key string) []settled {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]settled(nil), j.settled[key]...)
}

func (j *journal) calls(key string) []int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]int(nil), j.started[key]...)
}

// handled keeps the items settled as handled or dead, in their order.
func handled(s []settled) []settled {
	var out []settled
	for _, x := range s {
		if x.o != lanes.Abandoned {
			out = append(out, x)
		}
	}
	return out
}

// num is an item's number within its key, carried in the delivery's id.
func num(d broker.Delivery) int {
	var key string
	var n int
	_, _ = fmt.Sscanf(d.ID, "%s %d", &key, &n)
	return n
}

func item(key string, n int) lanes.Item[int] {
	return lanes.Item[int]{Key: key, Value: n, Delivery: broker.Delivery{Message: broker.Message{ID: fmt.Sprintf("%s %d", key, n), Key: key}, Attempt: 1}}
}

func newDispatcher(t *testing.T, c lanes.Config[int]) *lanes.Dispatcher[int] {
	t.Helper()
	d, err := lanes.New(c)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wide)
		defer cancel()
		assert.NoError(t, d.Close(ctx))
	})
	return d
}

func add(t *testing.T, d *lanes.Dispatcher[int], it lanes.Item[int]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wide)
	defer cancel()
	require.NoError(t, d.Add(ctx, it))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, wide, what, cond)
}

// TestOrderPerKey: many keys, random handler times and transient
// failures: every key's items run and settle in order, never two of a key
// at once, and the workers do run in parallel.
func TestOrderPerKey(t *testing.T) {
	brokertest.CheckNoLeak(t)
	const keys, per, workers = 40, 30, 8
	j := newJournal()
	var failures atomic.Int64
	d := newDispatcher(t, lanes.Config[int]{
		Workers: workers, Capacity: 256, MaxAttempts: 5,
		Backoff: backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		Handler: func(_ context.Context, d broker.Delivery) error {
			j.enter(d)
			defer j.leave(d)
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			if d.Attempt == 1 && rand.IntN(20) == 0 { // 5 % of first attempts
				failures.Add(1)
				return errors.New("transient")
			}
			return nil
		},
		Settle: j.settle,
	})
	// Keys interleaved as a queue would deliver them.
	for n := range per {
		for k := range keys {
			add(t, d, item(fmt.Sprintf("k%d", k), n))
		}
	}
	waitFor(t, "every item settled", func() bool { return j.count() == keys*per })
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		out := j.outcomes(key)
		for n, s := range out {
			require.Equal(t, settled{n, lanes.Handled}, s, "key %s settled out of order: %v", key, out)
		}
		calls := j.calls(key)
		for i := 1; i < len(calls); i++ {
			require.LessOrEqual(t, calls[i-1], calls[i], "key %s handled out of order: %v", key, calls)
		}
	}
	assert.Zero(t, j.overlap, "two calls of one key at once")
	assert.Greater(t, j.maxPar, 1, "the workers never ran in parallel")
	st := d.Stats()
	assert.Equal(t, int64(keys*per), st.Handled)
	assert.Equal(t, failures.Load(), st.Retried)
	t.Logf("%d items, %d transient failures retried in place, up to %d handlers at once", keys*per, failures.Load(), j.maxPar)
}

// TestParallelAcrossKeys: as many keys as workers run at once (a barrier
// that only opens when all are inside).
func TestParallelAcrossKeys(t *testing.T) {
	const workers = 6
	var inside sync.WaitGroup
	inside.Add(workers)
	open := make(chan struct{})
	go func() { inside.Wait(); close(open) }()
	j := newJournal()
	d := newDispatcher(t, lanes.Config[int]{Workers: workers, Handler: func(ctx context.Context, d broker.Delivery) error {
		inside.Done()
		select {
		case <-open:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, Settle: j.settle})
	for k := range workers {
		add(t, d, item(fmt.Sprintf("k%d", k), 0))
	}
	waitFor(t, "all handled at once", func() bool { return j.count() == workers })
}

// TestRetryHoldsLane: a failing item is retried with its attempt number,
// its key's next item waits for it, and another key goes on meanwhile.
func TestRetryHoldsLane(t *testing.T) {
	j := newJournal()
	release := make(chan struct{})
	var attempts []int
	var retrying []time.Duration
	var mu sync.Mutex
	d := newDispatcher(t, lanes.Config[int]{Workers: 2, MaxAttempts: 1 << 30,
		Backoff: backoff.Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond},
		Handler: func(_ context.Context, d broker.Delivery) error {
			j.enter(d)
			defer j.leave(d)
			if d.Key == "a" && num(d) == 0 {
				mu.Lock()
				attempts = append(attempts, d.Attempt)
				mu.Unlock()
				select {
				case <-release:
					return nil
				default:
					return errors.New("not yet")
				}
			}
			return nil
		},
		Retrying: func(_ *lanes.Item[int], err error, attempt int, wait time.Duration) {
			mu.Lock()
			retrying = append(retrying, wait)
			mu.Unlock()
		},
		Settle: j.settle})
	add(t, d, item("a", 0))
	add(t, d, item("a", 1))
	for n := range 20 {
		add(t, d, item("b", n))
	}
	waitFor(t, "key b handled while a retries", func() bool { return len(j.outcomes("b")) == 20 })
	assert.Empty(t, j.outcomes("a"), "a's items wait for its failing head")
	waitFor(t, "a retried", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) >= 2 })
	close(release)
	waitFor(t, "a's items handled", func() bool { return len(j.outcomes("a")) == 2 })
	assert.Equal(t, []settled{{0, lanes.Handled}, {1, lanes.Handled}}, j.outcomes("a"))
	mu.Lock()
	defer mu.Unlock()
	for i, a := range attempts {
		assert.Equal(t, i+1, a, "attempt numbers count up")
	}
	for _, w := range retrying {
		assert.LessOrEqual(t, w, 2*time.Millisecond, "the wait is the backoff's")
	}
}

// TestRun: with one worker, Run handles an item on the caller's goroutine
// while nothing is held; a failed first attempt waits for its retry on
// its lane, its key's later items behind it, while the other keys go on
// (handed to the worker); once the dispatcher is empty again Run handles
// inline again. Every item is settled once, each key in order.
func TestRun(t *testing.T) {
	j := newJournal()
	release := make(chan struct{})
	var inline atomic.Int64
	var caller atomic.Pointer[string]
	d := newDispatcher(t, lanes.Config[int]{Workers: 1, MaxAttempts: 1 << 30,
		Backoff: backoff.Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond},
		Handler: func(ctx context.Context, d broker.Delivery) error {
			j.enter(d)
			defer j.leave(d)
			if v, _ := ctx.Value(runKey{}).(string); v != "" {
				t.Error("the handler's ctx is the workers', not Run's")
			}
			if p := caller.Load(); p != nil && *p == d.ID {
				inline.Add(1)
			}
			if d.Key == "a" && num(d) == 0 {
				select {
				case <-release:
					return nil
				default:
					return errors.New("not yet")
				}
			}
			return nil
		},
		Settle: j.settle})
	ctx := context.WithValue(context.Background(), runKey{}, "run")
	run := func(it lanes.Item[int]) {
		id := it.Delivery.ID
		caller.Store(&id)
		require.NoError(t, d.Run(ctx, it))
		caller.Store(nil)
	}
	run(item("c", 0))
	assert.Equal(t, []settled{{0, lanes.Handled}}, j.outcomes("c"), "settled before Run returned")
	run(item("a", 0)) // fails: waits for its retry on its lane
	assert.Equal(t, 1, d.Stats().Held)
	run(item("a", 1))
	for n := range 20 {
		run(item("b", n))
	}
	waitFor(t, "key b handled while a retries", func() bool { return len(j.outcomes("b")) == 20 })
	assert.Empty(t, j.outcomes("a"), "a's items wait for its failing head")
	close(release)
	waitFor(t, "a's items handled", func() bool { return len(j.outcomes("a")) == 2 })
	assert.Equal(t, []settled{{0, lanes.Handled}, {1, lanes.Handled}}, j.outcomes("a"))
	require.NoError(t, d.Idle(context.Background()))
	before := inline.Load()
	run(item("c", 1))
	assert.Equal(t, before+1, inline.Load(), "inline again once nothing is held")
	assert.Equal(t, []settled{{0, lanes.Handled}, {1, lanes.Handled}}, j.outcomes("c"))
	assert.Zero(t, j.overlap)
}

type runKey struct{}

// TestDeadLetterThenMoveOn: after MaxAttempts the item is dead-lettered
// (with its attempts and category) and its key goes on; a permanent error
// is dead at once; a failing dead-letter store is tried again, holding the
// lane.
func TestDeadLetterThenMoveOn(t *testing.T) {
	j := newJournal()
	var mu sync.Mutex
	dead := map[string]broker.DeadLetter{}
	var storeFailures atomic.Int32
	d := newDispatcher(t, lanes.Config[int]{Workers: 4, MaxAttempts: 3,
		Backoff: backoff.Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond},
		Handler: func(_ context.Context, d broker.Delivery) error {
			j.enter(d)
			defer j.leave(d)
			switch {
			case d.Key == "fails" && num(d) == 0:
				return errors.New("always")
			case d.Key == "poison" && num(d) == 0:
				return &broker.Error{Op: "test", Kind: broker.ErrInvalid, Err: errors.New("undecodable")}
			}
			return nil
		},
		DeadLetter: func(_ context.Context, it *lanes.Item[int], dl broker.DeadLetter, _ error) error {
			if it.Key == "fails" && storeFailures.Add(1) <= 2 {
				return errors.New("dead-letter queue unavailable")
			}
			mu.Lock()
			defer mu.Unlock()
			dead[it.Delivery.ID] = dl
			return nil
		},
		Settle: j.settle})
	for _, k := range []string{"fails", "poison"} {
		add(t, d, item(k, 0))
		add(t, d, item(k, 1))
	}
	waitFor(t, "all settled", func() bool { return j.count() == 4 })
	assert.Equal(t, []settled{{0, lanes.DeadLettered}, {1, lanes.Handled}}, j.outcomes("fails"))
	assert.Equal(t, []settled{{0, lanes.DeadLettered}, {1, lanes.Handled}}, j.outcomes("poison"))
	assert.Equal(t, []int{0, 0, 0, 1}, j.calls("fails"), "three attempts, then the next item")
	assert.Equal(t, []int{0, 1}, j.calls("poison"), "a permanent error is not retried")
	mu.Lock()
	defer mu.Unlock()
	f := dead["fails 0"]
	assert.Equal(t, 3, f.Attempts)
	assert.Equal(t, broker.CategoryHandlerFailed, f.Category)
	assert.Equal(t, "always", f.Reason)
	assert.False(t, f.FirstFailure.After(f.LastFailure))
	p := dead["poison 0"]
	assert.Equal(t, 1, p.Attempts)
	assert.Equal(t, broker.CategoryInvalid, p.Category)
	assert.Equal(t, int32(3), storeFailures.Load(), "the dead letter was stored on the third try")
	assert.Equal(t, int64(2), d.Stats().DeadLettered)
}

// TestPanicRecovered: a panicking handler is a failure like another: the
// item is retried, the error matches adapter.ErrPanic, the dispatcher
// lives on.
func TestPanicRecovered(t *testing.T) {
	j := newJournal()
	var perr atomic.Value
	d := newDispatcher(t, lanes.Config[int]{Workers: 1, MaxAttempts: 2,
		Handler: func(_ context.Context, d broker.Delivery) error {
			if d.Attempt == 1 {
				panic("handler bug")
			}
			return nil
		},
		Retrying: func(_ *lanes.Item[int], err error, _ int, _ time.Duration) { perr.Store(err) },
		Settle:   j.settle})
	add(t, d, item("a", 0))
	add(t, d, item("a", 1))
	waitFor(t, "both handled", func() bool { return j.count() == 2 })
	assert.Equal(t, []settled{{0, lanes.Handled}, {1, lanes.Handled}}, j.outcomes("a"))
	err, _ := perr.Load().(error)
	require.ErrorIs(t, err, adapter.ErrPanic)
	assert.Contains(t, err.Error(), "handler bug")
}

// TestBlockedKey: a key whose handler is stuck fills its lane; the feeder
// then waits (backpressure), while the other keys already held keep
// running; once the key moves on, the feeder goes on.
func TestBlockedKey(t *testing.T) {
	j := newJournal()
	unblock := make(chan struct{})
	d := newDispatcher(t, lanes.Config[int]{Workers: 2, Capacity: 32, LaneCapacity: 3,
		Handler: func(ctx context.Context, d broker.Delivery) error {
			if d.Key == "stuck" {
				select {
				case <-unblock:
				case <-ctx.Done():
				}
			}
			return nil
		},
		Settle: j.settle})
	for n := range 3 {
		add(t, d, item("stuck", n))
	}
	for n := range 10 {
		add(t, d, item("free", n))
	}
	added := make(chan error, 1)
	go func() { added <- d.Add(context.Background(), item("stuck", 3)) }()
	waitFor(t, "the other key handled", func() bool { return len(j.outcomes("free")) == 10 })
	select {
	case err := <-added:
		t.Fatalf("Add to a full lane returned %v: want it to wait", err)
	default:
	}
	assert.Empty(t, j.outcomes("stuck"))
	close(unblock)
	select {
	case err := <-added:
		require.NoError(t, err)
	case <-time.After(wide):
		t.Fatal("Add still waits after the lane moved on")
	}
	waitFor(t, "the stuck key handled", func() bool { return len(j.outcomes("stuck")) == 4 })
}

// TestCapacityBackpressure: at Capacity, Add waits until an item leaves,
// and gives up with its ctx.
func TestCapacityBackpressure(t *testing.T) {
	j := newJournal()
	unblock := make(chan struct{})
	d := newDispatcher(t, lanes.Config[int]{Workers: 1, Capacity: 2,
		Handler: func(ctx context.Context, d broker.Delivery) error { <-unblock; return nil },
		Settle:  j.settle})
	add(t, d, item("a", 0))
	add(t, d, item("b", 0))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Add(ctx, item("c", 0)) }()
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	close(unblock)
	add(t, d, item("c", 0))
	waitFor(t, "all handled", func() bool { return j.count() == 3 })
}

// TestCloseWhileRetrying: Close does not wait for a retry's backoff: the
// waiting item and those behind it are abandoned (the broker delivers them
// again), the running one finishes and is settled, and nothing is left
// running.
func TestCloseWhileRetrying(t *testing.T) {
	brokertest.CheckNoLeak(t)
	j := newJournal()
	inside := make(chan struct{})
	finish := make(chan struct{})
	d, err := lanes.New(lanes.Config[int]{Workers: 2, MaxAttempts: 10,
		Backoff: backoff.Policy{Initial: time.Hour, Max: time.Hour},
		Handler: func(_ context.Context, d broker.Delivery) error {
			switch d.Key {
			case "retrying":
				return errors.New("fails")
			case "running":
				close(inside)
				<-finish
			}
			return nil
		},
		Settle: j.settle})
	require.NoError(t, err)
	add(t, d, item("retrying", 0))
	add(t, d, item("retrying", 1))
	add(t, d, item("running", 0))
	add(t, d, item("running", 1))
	<-inside
	waitFor(t, "the retry waiting", func() bool { return d.Stats().Retried == 1 })
	closed := make(chan error, 1)
	go func() { closed <- d.Close(context.Background()) }()
	waitFor(t, "the waiting items abandoned", func() bool { return j.count() == 3 })
	assert.Equal(t, []settled{{0, lanes.Abandoned}, {1, lanes.Abandoned}}, j.outcomes("retrying"))
	assert.Equal(t, []settled{{1, lanes.Abandoned}}, j.outcomes("running"))
	require.ErrorIs(t, d.Add(context.Background(), item("x", 0)), lanes.ErrClosed)
	close(finish)
	require.NoError(t, <-closed)
	assert.Equal(t, []settled{{1, lanes.Abandoned}, {0, lanes.Handled}}, j.outcomes("running"), "the running call finished and was settled")
	assert.NoError(t, d.Close(context.Background()), "a second Close")
}

// TestCloseGivesUp: a handler that ignores its ctx cannot hold Close past
// its ctx; its outcome is abandoned; its worker ends when it returns.
func TestCloseGivesUp(t *testing.T) {
	brokertest.CheckNoLeak(t)
	j := newJournal()
	inside := make(chan struct{})
	release := make(chan struct{})
	var cancelled atomic.Bool
	d, err := lanes.New(lanes.Config[int]{Workers: 1, Handler: func(ctx context.Context, d broker.Delivery) error {
		close(inside)
		<-release // ignores ctx
		cancelled.Store(ctx.Err() != nil)
		return nil
	}, Settle: j.settle})
	require.NoError(t, err)
	add(t, d, item("a", 0))
	<-inside
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, d.Close(ctx), context.Canceled)
	close(release)
	waitFor(t, "the late outcome settled", func() bool { return j.count() == 1 })
	assert.Equal(t, []settled{{0, lanes.Abandoned}}, j.outcomes("a"))
	assert.True(t, cancelled.Load(), "the handler's ctx was cancelled when Close gave up")
	require.NoError(t, d.Close(context.Background()), "a later Close waits for the end")
}

// TestContext: ending Config.Context ends the handlers' ctx, as Close
// giving up does, without closing the dispatcher.
func TestContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	inside := make(chan struct{})
	j := newJournal()
	d := newDispatcher(t, lanes.Config[int]{Workers: 1, Context: parent,
		Handler: func(ctx context.Context, _ broker.Delivery) error {
			close(inside)
			<-ctx.Done()
			return ctx.Err()
		},
		Settle: j.settle})
	add(t, d, item("a", 0))
	<-inside
	cancel()
	waitFor(t, "the cancelled call settled", func() bool { return j.count() == 1 })
	assert.Equal(t, []settled{{0, lanes.DeadLettered}}, j.outcomes("a"), "MaxAttempts 1: the failure is final")
}

// TestExpire: items whose Gone closed (their channel died) are not
// started; a lane waiting for a retry of such an item goes on at once
// with the redelivered copies behind it; a running call is not interrupted.
func TestExpire(t *testing.T) {
	j := newJournal()
	gone := make(chan struct{})
	inside := make(chan struct{}, 1)
	finish := make(chan struct{})
	d := newDispatcher(t, lanes.Config[int]{Workers: 2, MaxAttempts: 10,
		Backoff: backoff.Policy{Initial: time.Hour, Max: time.Hour},
		Handler: func(_ context.Context, d broker.Delivery) error {
			j.enter(d)
			defer j.leave(d)
			switch {
			case d.Key == "a" && d.Attempt == 1 && num(d) == 0:
				return errors.New("fails once")
			case d.Key == "b" && num(d) == 0:
				inside <- struct{}{}
				<-finish
			}
			return nil
		},
		Settle: j.settle})
	old := func(key string, n int) lanes.Item[int] { it := item(key, n); it.Gone = gone; return it }
	add(t, d, old("a", 0))
	add(t, d, old("a", 1))
	add(t, d, old("b", 0))
	add(t, d, old("b", 1))
	<-inside
	waitFor(t, "a's head waiting for its retry", func() bool { return d.Stats().Retried == 1 })
	close(gone) // the session ended: the broker redelivers everything unacknowledged
	fresh := func(key string, n int) lanes.Item[int] { it := item(key, n+10); return it }
	add(t, d, fresh("a", 0))
	add(t, d, fresh("a", 1))
	add(t, d, fresh("b", 0))
	d.Expire()
	waitFor(t, "a's redelivered items handled", func() bool { return len(j.outcomes("a")) == 4 })
	assert.ElementsMatch(t, []settled{{0, lanes.Abandoned}, {1, lanes.Abandoned}, {10, lanes.Handled}, {11, lanes.Handled}}, j.outcomes("a"))
	assert.Equal(t, []settled{{10, lanes.Handled}, {11, lanes.Handled}}, handled(j.outcomes("a")))
	assert.Equal(t, []settled{{1, lanes.Abandoned}}, j.outcomes("b"), "b's old queued item abandoned, its running one not interrupted")
	close(finish)
	waitFor(t, "b settled", func() bool { return len(j.outcomes("b")) == 3 })
	assert.Equal(t, []settled{{1, lanes.Abandoned}, {0, lanes.Handled}, {10, lanes.Handled}}, j.outcomes("b"))
	assert.Equal(t, []int{0, 10}, j.calls("b"), "the redelivered copy ran after the old call finished")
	assert.Zero(t, j.overlap)
}

func TestIdle(t *testing.T) {
	j := newJournal()
	d := newDispatcher(t, lanes.Config[int]{Workers: 3, Handler: func(context.Context, broker.Delivery) error {
		time.Sleep(time.Millisecond)
		return nil
	}, Settle: j.settle})
	for n := range 30 {
		add(t, d, item(fmt.Sprintf("k%d", n%5), n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), wide)
	defer cancel()
	require.NoError(t, d.Idle(ctx))
	assert.Equal(t, 30, j.count())
	assert.Zero(t, d.Stats().Held)
}

func TestConfigErrors(t *testing.T) {
	h := func(context.Context, broker.Delivery) error { return nil }
	s := func(*lanes.Item[int], lanes.Outcome) {}
	for _, c := range []struct {
		name string
		cfg  lanes.Config[int]
		want string
	}{
		{"workers", lanes.Config[int]{Handler: h, Settle: s}, "Workers 0"},
		{"handler", lanes.Config[int]{Workers: 1, Settle: s}, "Handler is nil"},
		{"settle", lanes.Config[int]{Workers: 1, Handler: h}, "Settle is nil"},
		{"capacity", lanes.Config[int]{Workers: 1, Handler: h, Settle: s, Capacity: -1}, "Capacity -1"},
		{"backoff", lanes.Config[int]{Workers: 1, Handler: h, Settle: s, Backoff: backoff.Policy{Initial: 2, Max: 1}}, "Backoff"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := lanes.New(c.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestWatermark(t *testing.T) {
	var w lanes.Watermark
	assert.Equal(t, int64(0), w.Commit())
	for _, n := range []int64{10, 11, 13, 14} { // 12: a gap (compaction, a transaction marker)
		require.NoError(t, w.Add(n))
	}
	require.Error(t, w.Add(14), "numbers must increase")
	c, moved := w.Done(13)
	assert.Equal(t, int64(10), c)
	assert.False(t, moved, "10 is not finished")
	c, moved = w.Done(11)
	assert.False(t, moved)
	assert.Equal(t, int64(10), c)
	c, moved = w.Done(10)
	assert.True(t, moved)
	assert.Equal(t, int64(14), c, "up to the lowest unfinished")
	c, moved = w.Done(99)
	assert.False(t, moved, "never added")
	assert.Equal(t, int64(14), c)
	c, moved = w.Done(14)
	assert.True(t, moved)
	assert.Equal(t, int64(15), c, "all finished: one past the last")
	assert.Zero(t, w.Pending())
	require.NoError(t, w.Add(20))
	assert.Equal(t, int64(20), w.Commit())
}

// The watermark against a model over a long random run (items finishing
// out of order, up to 300 pending, so its marks slide and are reused), and
// without an allocation per item once its marks have grown.
func TestWatermarkModel(t *testing.T) {
	var w lanes.Watermark
	rng := rand.New(rand.NewPCG(1, 2))
	pending := []int64{} // started, not finished, in order
	var added []int64    // started, in order
	var next, highest int64
	highest = -1
	for range 200_000 {
		if len(pending) < 300 && (len(pending) == 0 || rng.IntN(2) == 0) {
			next += 1 + int64(rng.IntN(2)) // gaps allowed
			require.NoError(t, w.Add(next))
			pending = append(pending, next)
			added = append(added, next)
			highest = next
			continue
		}
		i := rng.IntN(min(len(pending), 20))
		n := pending[i]
		pending = append(pending[:i], pending[i+1:]...)
		want := highest + 1
		if len(pending) > 0 {
			want = pending[0]
		}
		c, moved := w.Done(n)
		require.Equal(t, want, c, "Done(%d)", n)
		require.Equal(t, i == 0, moved, "Done(%d) moved", n)
		below, _ := slices.BinarySearch(added, want)
		require.Equal(t, len(added)-below, w.Pending(), "pending: from the commit point up")
	}
	for _, n := range pending {
		w.Done(n)
	}
	assert.Zero(t, w.Pending())
	allocs := testing.AllocsPerRun(1000, func() {
		next++
		_ = w.Add(next)
		w.Done(next)
	})
	assert.Zero(t, allocs, "allocations per item")
}

// BenchmarkDispatch is the dispatcher's own cost per item: one feeder, 16
// workers, 1,000 keys, a handler that does nothing.
func BenchmarkDispatch(b *testing.B) {
	var done atomic.Int64
	d, err := lanes.New(lanes.Config[int]{Workers: 16, Capacity: 256,
		Handler: func(context.Context, broker.Delivery) error { return nil },
		Settle:  func(*lanes.Item[int], lanes.Outcome) { done.Add(1) }})
	require.NoError(b, err)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("order-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := d.Add(context.Background(), lanes.Item[int]{Key: keys[i%len(keys)], Value: i}); err != nil {
			b.Fatal(err)
		}
	}
	for done.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	require.NoError(b, d.Close(context.Background()))
}
