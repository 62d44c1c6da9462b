package rabbitmq_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/internal/rabbittest"
	"github.com/domainevents/domainevents/internal/testenv"
)

// The tests below run on a private three-node RabbitMQ cluster on loopback
// (scripts/rabbitmq-cluster.sh, through internal/rabbittest); they kill and
// stop its nodes. The machine's node on 5672 is never touched. They belong
// to the long test tier (DOMAINEVENTS_LONG_TESTS=1) and skip without
// rabbitmq-server (failing in CI).

func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m)) }

// clusterEvents is how many events the cluster publisher test sends:
// 10,000 by default; DE_CLUSTER_EVENTS=50000 for the full run the issue
// asks for (about a minute more).
func clusterEvents() int {
	if n, err := strconv.Atoi(os.Getenv("DE_CLUSTER_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 10_000
}

// clusterConfig is a configuration with every node's address and a fresh
// exchange; the connection name is unique, so that the test can find which
// node the adapter is connected to.
func clusterConfig(t *testing.T, c *rabbittest.LocalCluster) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Addresses = c.Addrs()
	cfg.Exchange = "det.cluster." + uuid.NewString()[:8]
	cfg.ClientID = cfg.Exchange
	return cfg
}

// nodeOf is the node a named client connection is on.
func nodeOf(t *testing.T, c *rabbittest.LocalCluster, name string) int {
	t.Helper()
	var node = -1
	waitFor(t, 30*time.Second, "the connection "+name+" listed", func() bool {
		conns, err := c.Connections()
		if err != nil {
			return false
		}
		for _, cn := range conns {
			if cn.Name == name {
				node = cn.Node
				return true
			}
		}
		return false
	})
	return node
}

// drainCluster reads every message of queue through node n.
func drainCluster(t *testing.T, c *rabbittest.LocalCluster, n int, queue string, want map[string]bool) (got map[string]int) {
	t.Helper()
	conn, err := c.Dial(n)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.Qos(2000, 0, false))
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	got = map[string]int{}
	missing := len(want)
	idle := time.NewTimer(5 * time.Second)
	defer idle.Stop()
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return got
			}
			got[d.MessageId]++
			if got[d.MessageId] == 1 && want[d.MessageId] {
				missing--
			}
			if missing == 0 {
				idle.Reset(time.Second) // the rest: duplicates only
			}
		case <-idle.C:
			return got
		}
	}
}

// waitProgress waits until count() reaches n, failing only when it has not
// grown for stall: a loaded machine slows the work down (a fixed deadline
// broke on one), a stuck test stops it.
func waitProgress(t *testing.T, stall time.Duration, what string, n int, count func() int) {
	t.Helper()
	last, since := -1, time.Now()
	for {
		c := count()
		if c >= n {
			return
		}
		if c != last {
			last, since = c, time.Now()
		}
		if time.Since(since) > stall {
			t.Fatalf("no progress for %v waiting for %s: %d of %d", stall, what, c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterPublisherSurvivesNodeLoss: a quorum queue on 3 nodes, a
// publisher given all three addresses, 64 goroutines. The node the
// publisher is connected to is SIGKILLed at a third, restarted, and another
// node's app is stopped at two thirds. Every confirmed id is in the queue;
// duplicates are counted; the longest time without a confirm is measured.
func TestClusterPublisherSurvivesNodeLoss(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	c := rabbittest.Cluster(t)
	cfg := clusterConfig(t, c)
	queue := cfg.Exchange + ".q"
	adapter, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(testLogger(t)),
		rabbitmq.WithQueue(rabbitmq.Queue{Name: queue, Type: rabbitmq.Quorum}))
	require.NoError(t, err)
	pub, err := retry.New(adapter, retry.WithMaxElapsed(2*time.Minute), retry.WithAttemptTimeout(20*time.Second),
		retry.WithMaxAttempts(10_000), retry.WithBackoff(50*time.Millisecond, 500*time.Millisecond), retry.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer pub.Close(context.Background())
	first := nodeOf(t, c, cfg.ClientID)

	n := clusterEvents()
	const publishers = 64
	var (
		next      atomic.Int64
		done      atomic.Int64
		mu        sync.Mutex
		confirmed = map[string]bool{}
		times     []time.Time
		failed    []error
	)
	var wg sync.WaitGroup
	start := time.Now()
	for range publishers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				m := brokertest.NewMessage("order.created")
				err := pub.Publish(context.Background(), m)
				now := time.Now()
				mu.Lock()
				if err == nil {
					confirmed[m.ID] = true
					times = append(times, now)
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
				done.Add(1)
			}
		})
	}
	waitFor(t, 5*time.Minute, "a third confirmed", func() bool { return done.Load() >= int64(n/3) })
	killedAt := time.Now()
	require.NoError(t, c.Kill(first), "SIGKILL the publisher's node")
	waitFor(t, 5*time.Minute, "half confirmed", func() bool { return done.Load() >= int64(n/2) })
	require.NoError(t, c.Restart(first))
	other := (first + 1) % rabbittest.Nodes
	waitFor(t, 5*time.Minute, "two thirds confirmed", func() bool { return done.Load() >= int64(2*n/3) })
	require.NoError(t, c.StopApp(other), "stop_app another node")
	wg.Wait()
	took := time.Since(start)
	require.NoError(t, c.StartApp(other))
	if len(failed) > 0 {
		t.Fatalf("%d publishes failed within a 2 min budget, the first: %v", len(failed), failed[0])
	}

	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	var gapAt time.Time
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > gap {
			gap, gapAt = d, times[i-1]
		}
	}
	got := drainCluster(t, c, (first+2)%rabbittest.Nodes, queue, confirmed)
	missing, dups := 0, 0
	for id := range confirmed {
		if got[id] == 0 {
			missing++
		}
	}
	for _, k := range got {
		dups += k - 1
	}
	st := adapter.Stats()
	t.Logf("%d events from %d publishers in %v (%.0f/s): confirmed %d, missing %d, duplicates %d, unknown %d; "+
		"longest without a confirm %v (starting %v after the kill); reconnects %d, re-sent %d, nacked %d",
		n, publishers, took.Round(time.Millisecond), float64(n)/took.Seconds(), len(confirmed), missing, dups, len(got)-len(confirmed),
		gap.Round(time.Millisecond), gapAt.Sub(killedAt).Round(time.Millisecond), st.Reconnects, st.Republished, st.Nacked)
	assert.Equal(t, n, len(confirmed))
	assert.Zero(t, missing, "every confirmed id is in the queue")
	assert.GreaterOrEqual(t, st.Reconnects, int64(1))
}

// TestClusterSubscriberSurvivesNodeLoss: a subscriber on a quorum queue
// whose node dies (SIGKILL) mid-stream handles every event, 0 lost.
func TestClusterSubscriberSurvivesNodeLoss(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	c := rabbittest.Cluster(t)
	cfg := clusterConfig(t, c)
	queue := cfg.Exchange + ".q"
	var seen sync.Map
	var handled atomic.Int64
	sub, err := rabbitmq.NewSubscriber(context.Background(), cfg, rabbitmq.Queue{Name: queue, Type: rabbitmq.Quorum},
		func(_ context.Context, d broker.Delivery) error {
			if _, dup := seen.LoadOrStore(d.ID, true); !dup {
				handled.Add(1)
			}
			time.Sleep(200 * time.Microsecond) // a handler's work: a backlog builds up
			return nil
		}, rabbitmq.WithLogger(testLogger(t)), rabbitmq.WithPrefetch(100), rabbitmq.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond))
	require.NoError(t, err)
	defer sub.Close(context.Background())
	subNode := nodeOf(t, c, cfg.ClientID) // the subscriber's consuming connection
	pubCfg := cfg
	pubCfg.Addresses = []string{c.Addr((subNode + 1) % rabbittest.Nodes)}
	pubCfg.ClientID += ".pub"
	b, err := rabbitmq.New(context.Background(), pubCfg, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer b.Close(context.Background())

	const n = 3000
	ids := make([]string, 0, n)
	for range n {
		m := brokertest.NewMessage("order.created")
		require.NoError(t, b.Publish(context.Background(), m))
		ids = append(ids, m.ID)
	}
	waitFor(t, time.Minute, "some handled", func() bool { return handled.Load() >= n/4 })
	require.NoError(t, c.Kill(subNode), "SIGKILL the subscriber's node")
	waitProgress(t, 3*time.Minute, "every event handled", n, func() int { return int(handled.Load()) })
	lost := 0
	for _, id := range ids {
		if _, ok := seen.Load(id); !ok {
			lost++
		}
	}
	t.Logf("subscriber's node killed after %d of %d: all handled, %d lost", n/4, n, lost)
	assert.Zero(t, lost)
}

// TestClusterRetriesSurviveNodeCrash: 1,000 events whose handler fails
// twice each, the node holding the queue SIGKILLed while they wait for
// their retry, then restarted: every event handled successfully, 0 lost.
// On both queue types the failures wait unacknowledged in the subscriber:
// the broker redelivers them after its restart.
func TestClusterRetriesSurviveNodeCrash(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	for _, typ := range []rabbitmq.QueueType{rabbitmq.Quorum, rabbitmq.Classic} {
		t.Run(string(typ), func(t *testing.T) { testRetriesSurviveNodeCrash(t, typ) })
	}
}

func testRetriesSurviveNodeCrash(t *testing.T, typ rabbitmq.QueueType) {
	c := rabbittest.Cluster(t)
	cfg := clusterConfig(t, c)
	cfg.Addresses = c.Addrs()[:1] // node 0 holds the classic queue (and leads the quorum one)
	queue := cfg.Exchange + ".q"
	const n, fails = 1000, 2
	var mu sync.Mutex
	attempts := map[string]int{}
	succeeded := map[string]bool{}
	sub, err := rabbitmq.NewSubscriber(context.Background(), cfg, rabbitmq.Queue{Name: queue, Type: typ},
		func(_ context.Context, d broker.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[d.ID]++
			if attempts[d.ID] <= fails {
				return errors.New("downstream not ready")
			}
			succeeded[d.ID] = true
			return nil
		}, rabbitmq.WithLogger(discardLogger()), rabbitmq.WithRetryBackoff(3*time.Second, 3*time.Second), rabbitmq.WithMaxAttempts(10),
		rabbitmq.WithPrefetch(2*n), rabbitmq.WithConcurrency(4), rabbitmq.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond))
	require.NoError(t, err)
	defer sub.Close(context.Background())
	b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(testLogger(t)))
	require.NoError(t, err)
	ids := make([]string, 0, n)
	for range n {
		m := brokertest.NewMessage("order.created")
		require.NoError(t, b.Publish(context.Background(), m))
		ids = append(ids, m.ID)
	}
	require.NoError(t, b.Close(context.Background()))
	countFailed := func() int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, a := range attempts {
			if a >= 1 {
				k++
			}
		}
		return k
	}
	waitProgress(t, 2*time.Minute, "every event failed once: all wait for their retry", n, countFailed)
	require.NoError(t, c.Kill(0), "SIGKILL the node while the retries wait")
	require.NoError(t, c.Restart(0))
	waitProgress(t, 3*time.Minute, "every event handled successfully", n, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(succeeded)
	})
	mu.Lock()
	defer mu.Unlock()
	lost, extra := 0, 0
	for _, id := range ids {
		if !succeeded[id] {
			lost++
		}
		extra += attempts[id] - (fails + 1)
	}
	t.Logf("%s: %d events, each failing %d times, node killed while they waited: %d lost, %d handlings beyond the expected %d",
		typ, n, fails, lost, extra, n*(fails+1))
	assert.Zero(t, lost)
}

// TestOversizedMessageFailsAlone: against a node whose max_message_size is
// 1 MiB, a 2 MiB message fails with ErrTooLarge within a second, the 1,000
// ordinary publishes around it all succeed, with at most one reconnect.
func TestOversizedMessageFailsAlone(t *testing.T) {
	testenv.Long(t, "starts a three-node RabbitMQ cluster")
	c := rabbittest.Cluster(t)
	const node = 1
	_, err := c.Ctl(node, "eval", "application:set_env(rabbit, max_message_size, 1048576).")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = c.Ctl(node, "eval", "application:set_env(rabbit, max_message_size, 134217728).") })
	cfg := clusterConfig(t, c)
	cfg.Addresses = []string{c.Addr(node)}
	queue := cfg.Exchange + ".q"
	b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(testLogger(t)), rabbitmq.WithQueue(rabbitmq.Queue{Name: queue}))
	require.NoError(t, err)
	defer b.Close(context.Background())

	const n = 1000
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	errs := make(chan error, n)
	big := brokertest.NewMessage("order.created")
	big.Body = make([]byte, 2<<20)
	var bigErr error
	var bigTook time.Duration
	for i := range n {
		if i == n/2 {
			wg.Go(func() {
				start := time.Now()
				bigErr = b.Publish(context.Background(), big)
				bigTook = time.Since(start)
			})
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := b.Publish(ctx, brokertest.NewMessage("order.created")); err != nil {
				failed.Add(1)
				errs <- err
				return
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("an ordinary publish failed: %v", err)
	}
	st := b.Stats()
	t.Logf("2 MiB against 1 MiB: %v after %v; %d of %d ordinary publishes confirmed; reconnects %d, re-sent %d",
		bigErr, bigTook.Round(time.Millisecond), ok.Load(), n, st.Reconnects, st.Republished)
	require.ErrorIs(t, bigErr, broker.ErrTooLarge)
	assert.Less(t, bigTook, time.Second)
	assert.Equal(t, int64(n), ok.Load())
	assert.LessOrEqual(t, st.Reconnects, int64(1))
	err = b.Publish(context.Background(), big)
	assert.ErrorIs(t, err, broker.ErrTooLarge, "the limit is learned")
	assert.Equal(t, st.Reconnects, b.Stats().Reconnects, "and applied before sending")
}
