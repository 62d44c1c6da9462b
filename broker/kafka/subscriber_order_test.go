package kafka_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/internal/testenv"
)

// Key-ordered concurrency inside a partition (WithConcurrency), on kfake:
// speed with a slow handler, order under transient failures, a rebalance
// between two members, and a consumer SIGKILLed and restarted. Every test
// counts by event id and checks each key's order by its broker.HeaderSeq.

// keyOf is the key of event i of n over keys keys ("key-0042").
func keyOf(k int) string { return fmt.Sprintf("key-%04d", k) }

// publishKeyed publishes perKey events for each of keys keys, each key's
// events in order with broker.HeaderSeq 1, 2, ... (one goroutine per key,
// so the keys interleave in the partition). It returns every id.
func publishKeyed(t testing.TB, b *kafka.Broker, keys, perKey int) []string {
	t.Helper()
	ids := make([]string, 0, keys*perKey)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			for n := 1; n <= perKey; n++ {
				m := brokertest.NewMessage("order.status.updated")
				m.Key = keyOf(k)
				m.Headers = map[string]string{broker.HeaderSeq: strconv.Itoa(n)}
				if err := b.Publish(context.Background(), m); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				mu.Lock()
				ids = append(ids, m.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids
}

// orderCheck records handler calls: two of one key at once (overlaps),
// the first handling of each id, and per key whether first handlings
// follow the key's sequence (inversions). Deliveries count first attempts
// (a redelivery starts at attempt 1 again); retries are not duplicates.
type orderCheck struct {
	mu         sync.Mutex
	running    map[string]int
	calls      map[string]int   // deliveries, by id
	lastSeq    map[string]int64 // by key: the seq of its latest first handling
	overlaps   int
	inversions int
	first      int // distinct ids handled
	start, end time.Time
}

func newOrderCheck() *orderCheck {
	return &orderCheck{running: map[string]int{}, calls: map[string]int{}, lastSeq: map[string]int64{}}
}

func (o *orderCheck) enter(d broker.Delivery) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running[d.Key]++
	if o.running[d.Key] > 1 {
		o.overlaps++
	}
	if d.Attempt > 1 {
		return // a retry of a delivery already counted
	}
	o.calls[d.ID]++
	if o.calls[d.ID] > 1 {
		return
	}
	if d.Seq < o.lastSeq[d.Key] {
		o.inversions++
	}
	o.lastSeq[d.Key] = d.Seq
	o.first++
	if o.first == 1 {
		o.start = now
	}
	o.end = now
}

func (o *orderCheck) leave(d broker.Delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running[d.Key]--
}

func (o *orderCheck) distinct() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.first
}

// rate is distinct ids per second from the first handling to the last.
func (o *orderCheck) rate() float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first < 2 {
		return 0
	}
	return float64(o.first-1) / o.end.Sub(o.start).Seconds()
}

// report checks: every id handled, no overlap, no inversion; it returns
// the duplicates.
func (o *orderCheck) report(t *testing.T, ids []string) (dups int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	lost := 0
	for _, id := range ids {
		switch n := o.calls[id]; {
		case n == 0:
			lost++
		case n > 1:
			dups += n - 1
		}
	}
	assert.Zero(t, lost, "events never handled")
	assert.Zero(t, o.overlaps, "two handlers of one key at once")
	assert.Zero(t, o.inversions, "a key's events first handled out of order")
	return dups
}

// onePartition is a kfake cluster whose topic and dead-letter topic have
// one partition.
func onePartition(t *testing.T, topic string, opts ...kfake.Opt) *cluster {
	t.Helper()
	c := newCluster(t, nil, append([]kfake.Opt{kfake.SeedTopics(1, topic, topic+".dlq")}, opts...)...)
	c.needFake(t)
	return c
}

// consumeAll subscribes with handler h at concurrency n and waits until
// every id was handled once.
func consumeAll(t *testing.T, c *cluster, topic, group string, n int, o *orderCheck, ids []string, h broker.Handler) *kafka.Subscriber {
	t.Helper()
	s := c.subscribe(t, topic, group, func(ctx context.Context, d broker.Delivery) error {
		o.enter(d)
		defer o.leave(d)
		return h(ctx, d)
	}, kafka.WithLogger(discardLogger()), kafka.WithConcurrency(n), kafka.WithRetryBackoff(time.Millisecond, 20*time.Millisecond))
	waitFor(t, 5*time.Minute, fmt.Sprintf("%d events handled at c=%d", len(ids), n), func() bool { return o.distinct() == len(ids) })
	return s
}

// One partition, 1,000 keys, a 2 ms handler: sixteen handlers per
// partition handle several times as many events per second as one, each
// key in order. The rates are logged, not asserted (BenchmarkConsumeSlowHandler
// measures them).
func TestConsumeConcurrencySpeedup(t *testing.T) {
	perKey1, perKey16 := 1, 4 // quick: 1,000 events at c=1 (2 s), 4,000 at c=16
	if testenv.LongEnabled() {
		perKey1, perKey16 = 3, 20
	}
	checkNoLeak(t)
	slow := func(context.Context, broker.Delivery) error { time.Sleep(2 * time.Millisecond); return nil }
	rates := map[int]float64{}
	for _, tc := range []struct{ n, perKey int }{{1, perKey1}, {16, perKey16}} {
		topic := uniqueTopic()
		c := onePartition(t, topic)
		b := c.open(t, topic, kafka.WithLogger(discardLogger()))
		ids := publishKeyed(t, b, 1000, tc.perKey)
		o := newOrderCheck()
		consumeAll(t, c, topic, "speed", tc.n, o, ids, slow)
		dups := o.report(t, ids)
		assert.Zero(t, dups, "no rebalance, no failure: no duplicate")
		rates[tc.n] = o.rate()
		t.Logf("c=%d: %d events, 1,000 keys, 2 ms handler: %.0f events/s", tc.n, len(ids), rates[tc.n])
	}
	t.Logf("c=16 / c=1 = %.1fx", rates[16]/rates[1])
}

// Transient failures: 5 % of first attempts fail. The retry holds its
// key's lane: each key's events are first handled in order and never two
// at once, every event is handled, and the failures were retried.
func TestConsumeConcurrencyTransientFailures(t *testing.T) {
	perKey := 3
	if testenv.LongEnabled() {
		perKey = 20
	}
	checkNoLeak(t)
	topic := uniqueTopic()
	c := onePartition(t, topic)
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	ids := publishKeyed(t, b, 1000, perKey)
	var failed atomic.Int64
	o := newOrderCheck()
	s := consumeAll(t, c, topic, "transient", 16, o, ids, func(_ context.Context, d broker.Delivery) error {
		time.Sleep(200 * time.Microsecond)
		if d.Attempt == 1 && hashOf(d.ID)%20 == 0 {
			failed.Add(1)
			return errors.New("transient failure")
		}
		return nil
	})
	dups := o.report(t, ids)
	st := s.Stats()
	assert.Equal(t, failed.Load(), st.Retried, "each failure retried")
	assert.Zero(t, st.DeadLettered)
	t.Logf("%d events, 1,000 keys, c=16: %d first attempts failed (%.1f %%) and were retried; duplicates=%d",
		len(ids), failed.Load(), 100*float64(failed.Load())/float64(len(ids)), dups)
}

func hashOf(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}

// Two members of one group, c=16 each, while handlers run: a second
// member joins mid-stream (a rebalance), then the first leaves (another).
// Every event is handled, each key's first handlings in order, never two
// of a key at once across both members.
func TestConsumeConcurrencyRebalance(t *testing.T) {
	perKey := 3
	if testenv.LongEnabled() {
		perKey = 20
	}
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic, topic + ".dlq"}) // three partitions
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	ids := publishKeyed(t, b, 1000, perKey)
	o := newOrderCheck()
	h := func(_ context.Context, d broker.Delivery) error {
		o.enter(d)
		defer o.leave(d)
		time.Sleep(time.Millisecond)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := []kafka.SubscriberOption{kafka.WithLogger(discardLogger()), kafka.WithConcurrency(16)}
	first, err := kafka.NewSubscriber(ctx, c.config(topic), "rebalance", h, opts...)
	require.NoError(t, err)
	defer first.Close(context.Background())
	waitFor(t, time.Minute, "a quarter handled by the first member", func() bool { return o.distinct() >= len(ids)/4 })
	c.subscribe(t, topic, "rebalance", h, opts...)
	waitFor(t, time.Minute, "half handled", func() bool { return o.distinct() >= len(ids)/2 })
	atLeave := first.Stats()
	require.NoError(t, first.Close(ctx))
	waitFor(t, 5*time.Minute, "every event handled", func() bool { return o.distinct() == len(ids) })
	dups := o.report(t, ids)
	t.Logf("%d events, 3 partitions, 1,000 keys, two members at c=16: first member handled %d before leaving; duplicates=%d",
		len(ids), atLeave.Handled, dups)
}

// crashChildEnv makes the test binary a consumer child of
// TestConsumeConcurrencyCrash: "addrs|topic|group|journal|killAfter".
const crashChildEnv = "KAFKA_CRASH_CHILD"

// The consumer, c=16, is SIGKILLed mid-run (it kills itself right after a
// handler returned, before the offset could be committed) and restarted,
// several times in the long tier. After each kill every offset below the
// group's committed offset had been handled (offsets are committed only
// up to the lowest record not yet finished); at the end every event was
// handled (0 lost), each key's first handlings in order; duplicates are
// records the killed consumer handled at or past the committed offset.
func TestConsumeConcurrencyCrash(t *testing.T) {
	if env := os.Getenv(crashChildEnv); env != "" {
		os.Exit(crashChild(env))
	}
	perKey, kills := 3, 1
	if testenv.LongEnabled() {
		perKey, kills = 20, 3
	}
	topic := uniqueTopic()
	c := onePartition(t, topic, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	ids := publishKeyed(t, b, 1000, perKey)
	dir := t.TempDir()
	var handled []journalLine // every child's, in order
	seen := map[string]bool{}
	admin, err := sarama.NewClusterAdmin(c.addrs, sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	var explained int // handled by a killed child at or past the offset committed after its death
	for run := 0; run <= kills; run++ {
		killAfter := 0
		if run < kills {
			killAfter = len(ids) / (kills + 1) // each killed child handles about this many
		}
		journal := filepath.Join(dir, fmt.Sprintf("run-%d", run))
		cmd := exec.Command(os.Args[0], "-test.run=^TestConsumeConcurrencyCrash$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+strings.Join([]string{strings.Join(c.addrs, ","), topic, "crash", journal, strconv.Itoa(killAfter)}, "|"))
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		if killAfter > 0 {
			err := cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the child killed itself")
			require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal(), "child %d: %v", run, err)
		} else {
			waitFor(t, 5*time.Minute, "every event handled after the restarts", func() bool {
				n := len(seen)
				for _, l := range readJournal(t, journal) {
					if !seen[l.id] {
						n++
					}
				}
				return n >= len(ids)
			})
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			require.NoError(t, cmd.Wait(), "the last child closes cleanly")
		}
		lines := readJournal(t, journal)
		for _, l := range lines {
			seen[l.id] = true
		}
		handled = append(handled, lines...)
		if killAfter == 0 {
			break
		}
		offs, err := admin.ListConsumerGroupOffsets("crash", map[string][]int32{topic: {0}})
		require.NoError(t, err)
		committed := offs.GetBlock(topic, 0).Offset
		missing, past, top := 0, 0, int64(-1)
		done := map[int64]bool{}
		for _, l := range handled {
			done[l.offset] = true
		}
		for off := int64(0); off < committed; off++ {
			if !done[off] {
				missing++
			}
		}
		for _, l := range lines {
			if l.offset >= committed {
				past++
			}
			top = max(top, l.offset)
		}
		explained += past
		assert.Zero(t, missing, "run %d: offsets below the committed %d never handled", run, committed)
		t.Logf("run %d: killed after %d handled; committed offset %d, highest handled %d: %d handled at or past it (handled again next)",
			run, len(lines), committed, top, past)
	}
	o := newOrderCheck()
	for _, l := range handled {
		d := broker.Delivery{Message: broker.Message{ID: l.id, Key: l.key}, Seq: l.seq, Attempt: 1}
		o.enter(d) // in journal order: each child's handlers of one key never overlap in it
		o.leave(d)
	}
	dups := o.report(t, ids)
	assert.LessOrEqual(t, dups, explained, "duplicates beyond those the kills explain")
	t.Logf("%d events, 1,000 keys, one partition, c=16, %d SIGKILLs: lost=0 duplicates=%d (explained by the kills: %d)",
		len(ids), kills, dups, explained)
}

type journalLine struct {
	offset int64
	id     string
	key    string
	seq    int64
}

func readJournal(t *testing.T, path string) []journalLine {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out []journalLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			continue // a line torn by the kill: its handler had not returned
		}
		off, _ := strconv.ParseInt(fs[0], 10, 64)
		seq, _ := strconv.ParseInt(fs[3], 10, 64)
		out = append(out, journalLine{offset: off, id: fs[1], key: fs[2], seq: seq})
	}
	require.NoError(t, sc.Err())
	return out
}

// crashChild consumes with c=16 and a 1 ms handler, appending "offset id
// key seq" for each event handled; with killAfter it SIGKILLs itself
// right after that many, else runs until SIGTERM and closes.
func crashChild(env string) int {
	f := strings.Split(env, "|")
	addrs, topic, group, path := strings.Split(f[0], ","), f[1], f[2], f[3]
	killAfter, _ := strconv.Atoi(f[4])
	journal, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg := broker.DefaultConfig()
	cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, addrs, topic
	sc := sarama.NewConfig() // durable, as WithSaramaConfig wants; a short session so that a restart need not wait for the dead member
	sc.Version = sarama.DefaultVersion
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Consumer.Group.Session.Timeout = 2 * time.Second
	sc.Consumer.Group.Heartbeat.Interval = 200 * time.Millisecond
	sc.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	var handled atomic.Int64
	h := func(_ context.Context, d broker.Delivery) error {
		time.Sleep(time.Millisecond)
		if _, err := fmt.Fprintf(journal, "%d %s %s %d\n", d.Origin.Offset, d.ID, d.Key, d.Seq); err != nil {
			return err
		}
		if n := handled.Add(1); killAfter > 0 && n == int64(killAfter) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // handled, not committed
			select {}
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := kafka.NewSubscriber(sctx, cfg, group, h, kafka.WithConcurrency(16), kafka.WithSaramaConfig(sc),
		kafka.WithLogger(discardLogger()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	<-ctx.Done()
	cctx, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	if err := errors.Join(s.Close(cctx), journal.Close()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}
