package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/testenv"
)

// orderJournal checks what the key-order tests promise, counting by event
// id: every event handled, the first handling of each key's events in
// sequence order (an inversion is an event handled for the first time
// after a later event of its key), never two handlers of one key at once.
type orderJournal struct {
	mu         sync.Mutex
	running    map[string]int
	last       map[string]int64 // highest seq handled successfully, by key
	handled    map[string]int   // successful handlings, by id
	inversions int
	inverted   map[string]bool // keys with an inversion
	overlaps   int
	calls      atomic.Int64
	failed     atomic.Int64
}

func newOrderJournal() *orderJournal {
	return &orderJournal{running: map[string]int{}, last: map[string]int64{}, handled: map[string]int{}, inverted: map[string]bool{}}
}

func (j *orderJournal) enter(d broker.Delivery) {
	j.calls.Add(1)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key]++
	if j.running[d.Key] > 1 {
		j.overlaps++
	}
}

// leave records the end of a call; ok: the handler succeeded.
func (j *orderJournal) leave(d broker.Delivery, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key]--
	if !ok {
		return
	}
	j.handled[d.ID]++
	if j.handled[d.ID] > 1 {
		return // a redelivery: order counts on first handlings
	}
	if d.Seq < j.last[d.Key] {
		j.inversions++
		j.inverted[d.Key] = true
	}
	j.last[d.Key] = max(j.last[d.Key], d.Seq)
}

func (j *orderJournal) count(ids []string) (missing, dups int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, id := range ids {
		switch n := j.handled[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	return missing, dups
}

// failsFirst says whether an event's first attempt fails: about one in
// twenty, by its id.
func failsFirst(d broker.Delivery) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(d.ID))
	return d.Attempt == 1 && h.Sum32()%20 == 0
}

// publishOrders publishes events events for each of orders orders, each
// order's in sequence (key "order-<n>", broker.HeaderSeq 1, 2, 3...),
// orders interleaved by 32 goroutines. It returns the ids.
func publishOrders(t testing.TB, b broker.Broker, orders, events int) []string {
	t.Helper()
	ids := make([]string, orders*events)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for o := w; o < orders; o += 32 {
				for e := range events {
					m := brokertest.NewMessage("order.status.updated")
					m.Key = "order-" + strconv.Itoa(o)
					m.Headers = map[string]string{broker.HeaderSeq: strconv.Itoa(e + 1)}
					ids[o*events+e] = m.ID
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					err := b.Publish(ctx, m)
					cancel()
					if err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return ids
}

type keyOrderRun struct {
	typ            rabbitmq.QueueType
	orders, events int
	cuts           int           // connection cuts, spread over the run
	work           time.Duration // each handler call
}

// runKeyOrder publishes and consumes orders × events through a fault
// proxy with WithConcurrency(16), one in twenty first attempts failing,
// every connection cut cuts times mid-stream (what a broker restart does
// to the clients), and checks the journal: every event handled, 0
// inversions, never two handlers of a key at once.
func runKeyOrder(t *testing.T, r keyOrderRun) {
	checkNoLeak(t)
	f := newFixture(t)
	p := newProxy(t) // publisher and subscriber reach the broker through it: a cut is a broker restart to both
	b := f.open(t, p.Addr(), rabbitmq.WithReconnectBackoff(20*time.Millisecond, 200*time.Millisecond))
	j := newOrderJournal()
	s := f.subscribeType(t, p.Addr(), r.typ, func(_ context.Context, d broker.Delivery) error {
		j.enter(d)
		if r.work > 0 {
			time.Sleep(r.work)
		}
		if failsFirst(d) {
			j.failed.Add(1)
			j.leave(d, false)
			return errors.New("transient failure")
		}
		j.leave(d, true)
		return nil
	}, rabbitmq.WithConcurrency(16), rabbitmq.WithRetryBackoff(5*time.Millisecond, 50*time.Millisecond),
		rabbitmq.WithReconnectBackoff(20*time.Millisecond, 200*time.Millisecond), rabbitmq.WithLogger(discardLogger()))
	start := time.Now()
	var ids []string
	published := make(chan struct{})
	go func() { defer close(published); ids = publishOrders(t, b, r.orders, r.events) }()
	total := int64(r.orders * r.events)
	cuts := 0
	for i := 1; i <= r.cuts; i++ {
		at := total * int64(i) / int64(r.cuts+1)
		waitFor(t, 3*time.Minute, "consuming progress", func() bool { return j.calls.Load() >= at })
		if p.Cut() > 0 {
			cuts++
		}
	}
	<-published
	waitFor(t, 3*time.Minute, "every event handled", func() bool { missing, _ := j.count(ids); return missing == 0 })
	took := time.Since(start)
	missing, dups := j.count(ids)
	j.mu.Lock()
	defer j.mu.Unlock()
	st := s.Stats()
	t.Logf("%s queue, WithConcurrency(16): %d orders x %d events, %d first attempts failed, all connections cut %d times: "+
		"handled %d of %d, %d per-key inversions in %d orders, %d times two handlers of one key at once, %d redelivered duplicates, "+
		"%d handler calls, %d retried in place, in %v",
		r.typ, r.orders, r.events, j.failed.Load(), cuts, int(total)-missing, total, j.inversions, len(j.inverted), j.overlaps, dups,
		j.calls.Load(), st.Retried, took.Round(time.Millisecond))
	assert.Zero(t, missing, "events lost")
	assert.Zero(t, j.inversions, "per-key inversions")
	assert.Zero(t, j.overlaps, "two handlers of one key at once")
	assert.Equal(t, r.cuts, cuts, "every cut hit a connection")
	assert.Positive(t, j.failed.Load())
}

// TestConsumeKeyOrder: 100 orders × 30 events, 5 % of first attempts
// failing, every connection cut once: every event handled, each order's in
// sequence, never two handlers of one order at once.
func TestConsumeKeyOrder(t *testing.T) {
	runKeyOrder(t, keyOrderRun{typ: rabbitmq.Classic, orders: 100, events: 30, cuts: 1})
}

// TestConsumeKeyOrderLong: the same on both queue types, 1,000 orders, a
// handler doing 200µs of work, three cuts.
func TestConsumeKeyOrderLong(t *testing.T) {
	testenv.Long(t, "30,000 events per queue type through three connection cuts")
	for _, typ := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(typ), func(t *testing.T) {
			runKeyOrder(t, keyOrderRun{typ: typ, orders: 1000, events: 30, cuts: 3, work: 200 * time.Microsecond})
		})
	}
}

// TestConsumeRetryHoldsKey: an event failing three times holds its order
// (the order's next event waits for it) while the other orders go on;
// then it succeeds and its order continues.
func TestConsumeRetryHoldsKey(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	var mu sync.Mutex
	var order []string // "key:seq" as handled successfully
	attempts := map[string][]int{}
	other := make(chan struct{})
	var otherOnce sync.Once
	f.subscribe(t, rabbitAddr(), func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if d.Key == "stuck" && d.Seq == 1 {
			attempts[d.ID] = append(attempts[d.ID], d.Attempt)
			if d.Attempt <= 3 {
				return fmt.Errorf("failure %d", d.Attempt)
			}
			select {
			case <-other: // the other order went on meanwhile
			default:
				return errors.New("the other order has not gone on yet")
			}
		}
		order = append(order, fmt.Sprintf("%s:%d", d.Key, d.Seq))
		if d.Key == "other" && d.Seq == 20 {
			otherOnce.Do(func() { close(other) })
		}
		return nil
	}, rabbitmq.WithConcurrency(4), rabbitmq.WithMaxAttempts(100), rabbitmq.WithRetryBackoff(20*time.Millisecond, 100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	publish := func(key string, seq int) {
		m := brokertest.NewMessage("order.created")
		m.Key, m.Headers = key, map[string]string{broker.HeaderSeq: strconv.Itoa(seq)}
		require.NoError(t, b.Publish(ctx, m))
	}
	publish("stuck", 1)
	publish("stuck", 2)
	for seq := 1; seq <= 20; seq++ {
		publish("other", seq)
	}
	waitFor(t, time.Minute, "both orders handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 22 })
	mu.Lock()
	defer mu.Unlock()
	var stuck []string
	for _, o := range order {
		if o[:5] == "stuck" {
			stuck = append(stuck, o)
		}
	}
	assert.Equal(t, []string{"stuck:1", "stuck:2"}, stuck)
	for _, a := range attempts {
		assert.GreaterOrEqual(t, len(a), 4)
		for i, n := range a {
			assert.Equal(t, i+1, n, "the attempt number counts the failures")
		}
	}
}

// TestConsumeUnordered: WithUnordered lets one key's deliveries run at
// once (four handlers of one order meet at a barrier).
func TestConsumeUnordered(t *testing.T) {
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	var inside sync.WaitGroup
	inside.Add(4)
	met := make(chan struct{})
	go func() { inside.Wait(); close(met) }()
	var n atomic.Int32
	f.subscribe(t, rabbitAddr(), func(ctx context.Context, d broker.Delivery) error {
		if n.Add(1) <= 4 {
			inside.Done()
			select {
			case <-met:
			case <-ctx.Done():
			}
		}
		return nil
	}, rabbitmq.WithConcurrency(4), rabbitmq.WithUnordered())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 8 {
		m := brokertest.NewMessage("order.created")
		m.Key = "one-order"
		require.NoError(t, b.Publish(ctx, m))
	}
	waitFor(t, time.Minute, "four handlers of one key at once, then the rest", func() bool { return n.Load() == 8 })
}

// BenchmarkConsumeSlowHandler: a handler that takes 2 ms (a database
// write), 1,000 orders, ordered at concurrency 1 and 16: events/s. Each
// run consumes b.N events published beforehand.
func BenchmarkConsumeSlowHandler(b *testing.B) {
	for _, c := range []int{1, 16} {
		b.Run(fmt.Sprintf("ordered/c=%d", c), func(b *testing.B) {
			f := newFixture(b)
			pub := f.open(b, rabbitAddr(), rabbitmq.WithLogger(discardLogger()))
			ch, err := f.admin.Channel()
			require.NoError(b, err)
			defer ch.Close()
			_, err = ch.QueueDeclare(f.sub(), true, false, false, false, nil)
			require.NoError(b, err)
			require.NoError(b, ch.QueueBind(f.sub(), "#", f.exchange, false, nil))
			publishOrders(b, pub, 1000, (b.N+999)/1000)
			var done atomic.Int64
			all := make(chan struct{})
			total := int64((b.N + 999) / 1000 * 1000)
			b.ResetTimer()
			f.subscribe(b, rabbitAddr(), func(context.Context, broker.Delivery) error {
				time.Sleep(2 * time.Millisecond)
				if done.Add(1) == total {
					close(all)
				}
				return nil
			}, rabbitmq.WithConcurrency(c), rabbitmq.WithLogger(discardLogger()))
			<-all
			b.StopTimer()
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// TestConsumeReconnectReleasesRetryingKey: an order's first event fails
// and waits for a retry ten minutes away, its second event behind it; the
// connection is cut: the broker redelivers both on the new connection, and
// the order goes on with them at once, in order, instead of waiting out
// the old delivery's backoff (and no later delivery of the old connection
// runs after an earlier one came back).
func TestConsumeReconnectReleasesRetryingKey(t *testing.T) {
	checkNoLeak(t)
	f := newFixture(t)
	b := f.open(t, rabbitAddr())
	p := newProxy(t)
	var mu sync.Mutex
	var handled []int64
	failed := make(chan struct{})
	calls := 0
	f.subscribe(t, p.Addr(), func(_ context.Context, d broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			close(failed)
			return errors.New("fails before the cut")
		}
		handled = append(handled, d.Seq)
		return nil
	}, rabbitmq.WithConcurrency(4), rabbitmq.WithRetryBackoff(10*time.Minute, 10*time.Minute), rabbitmq.WithMaxAttempts(2),
		rabbitmq.WithReconnectBackoff(20*time.Millisecond, 100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for seq := 1; seq <= 2; seq++ {
		m := brokertest.NewMessage("order.created")
		m.Key, m.Headers = "order-1", map[string]string{broker.HeaderSeq: strconv.Itoa(seq)}
		require.NoError(t, b.Publish(ctx, m))
	}
	<-failed
	require.Positive(t, p.Cut())
	waitFor(t, time.Minute, "both events handled after the reconnect", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 2 })
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int64{1, 2}, handled)
}

// TestSubscriberRetryBudget: retries that could hold a delivery
// unacknowledged past 20 minutes are refused, naming both options, before
// anything connects.
func TestSubscriberRetryBudget(t *testing.T) {
	h := func(context.Context, broker.Delivery) error { return nil }
	_, err := rabbitmq.NewSubscriber(context.Background(), broker.DefaultConfig(), rabbitmq.Queue{Name: "q"}, h,
		rabbitmq.WithMaxAttempts(1000))
	require.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "WithMaxAttempts(1000)")
	assert.Contains(t, err.Error(), "WithRetryBackoff")
	_, err = rabbitmq.NewSubscriber(context.Background(), broker.DefaultConfig(), rabbitmq.Queue{Name: "q"}, h,
		rabbitmq.WithRetryBackoff(time.Millisecond, time.Hour))
	require.ErrorIs(t, err, broker.ErrInvalid)
	_, err = rabbitmq.NewSubscriber(context.Background(), broker.DefaultConfig(), rabbitmq.Queue{Name: "q"}, h,
		rabbitmq.WithRetryBackoff(0, time.Second))
	require.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "WithRetryBackoff(0s, 1s)")
}
