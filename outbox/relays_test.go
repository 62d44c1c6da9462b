package outbox_test

import (
	"context"
	"fmt"
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
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/testenv"
	"github.com/domainevents/domainevents/outbox"
)

// rabbitDest is a fresh exchange with one queue bound to keys.
type rabbitDest struct {
	cfg   broker.Config
	queue string
	ch    *amqp.Channel
	keys  []string
}

func newRabbitDest(t *testing.T, keys ...string) *rabbitDest {
	t.Helper()
	conn := requireRabbit(t)
	ch, err := conn.Channel()
	require.NoError(t, err)
	id := uuid.NewString()[:8]
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Addresses, cfg.Exchange = true, []string{rabbitAddr()}, "det.outbox."+id
	d := &rabbitDest{cfg: cfg, queue: cfg.Exchange + ".q", ch: ch, keys: keys}
	t.Cleanup(func() {
		for _, q := range []string{d.queue, cfg.Exchange + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(cfg.Exchange, false, false)
		_ = ch.ExchangeDelete(cfg.Exchange+".dlx", false, false)
		_ = ch.Close()
	})
	return d
}

// open connects a publisher that declares the queue.
func (d *rabbitDest) open(t *testing.T, opts ...rabbitmq.PublisherOption) *rabbitmq.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, d.cfg, append([]rabbitmq.PublisherOption{rabbitmq.WithLogger(brokertest.Logger(t)),
		rabbitmq.WithQueue(rabbitmq.Queue{Name: d.queue, Keys: d.keys})}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// keyed is a message of key with the key in a header, for reading back.
func keyed(name, key string) broker.Message {
	m := brokertest.NewMessage(name)
	m.Key = key
	m.Headers = map[string]string{"test-key": key}
	return m
}

// writeSpread stores n messages over keys k0..k(keys-1), round robin, in
// transactions of 100.
func writeSpread(t *testing.T, s *outbox.Store, n, keys int) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		var batch []broker.Message
		for j := i; j < min(i+100, n); j++ {
			batch = append(batch, keyed("order.created", fmt.Sprintf("k%03d", j%keys)))
		}
		write(t, s, batch...)
	}
}

// orderCounts checks arrivals against an outbox table: first arrivals per
// key in seq order, nothing lost or unknown; it returns the counts.
func orderCounts(t *testing.T, db *dbtest.DB, table string, arrivals []arrival) counts {
	t.Helper()
	type info struct {
		key string
		seq int64
	}
	rows := map[string]info{}
	rs, err := db.Query("SELECT id, msg_key, seq FROM " + table)
	require.NoError(t, err)
	for rs.Next() {
		var id string
		var r info
		require.NoError(t, rs.Scan(&id, &r.key, &r.seq))
		rows[id] = r
	}
	require.NoError(t, rs.Close())
	var c counts
	c.expected = len(rows)
	seen, last := map[string]bool{}, map[string]int64{}
	for _, a := range arrivals {
		r, ok := rows[a.id]
		switch {
		case !ok:
			c.unknown++
		case seen[a.id]:
			c.dups++
		default:
			seen[a.id] = true
			if r.seq != last[r.key]+1 {
				c.outOfOrder++
			}
			last[r.key] = r.seq
		}
	}
	c.unique = len(seen)
	c.lost = c.expected - c.unique
	return c
}

// relayLoad is the two-relay test's size: 10,000 events over 100 keys in
// the long test tier, 2,000 over 20 by default.
func relayLoad() (events, keys int) {
	return testenv.Count(2000, 10000), testenv.Count(20, 100)
}

// freezer publishes for real, then, while frozen, holds the outcome until
// thawed, ignoring ctx: a relay process paused (GC, SIGSTOP) between the
// broker's confirm and its mark, past its lease.
type freezer struct {
	broker.Broker
	frozen atomic.Bool
	held   atomic.Int64
	thaw   chan struct{}
}

func (f *freezer) Publish(ctx context.Context, m broker.Message) error {
	err := f.Broker.Publish(ctx, m)
	if f.frozen.Load() {
		f.held.Add(1)
		<-f.thaw
	}
	return err
}

// Two relays on 10,000 events over 100 keys, through RabbitMQ: per-key
// order holds for every key, nothing is lost, and duplicates are no more
// than the rows in flight at a relay whose lease ran out (frozen past its
// lease, it loses its rows to the other relay and marks none of them). The
// drain times of one relay and of two are logged, not asserted.
func TestTwoRelays(t *testing.T) {
	for _, open := range []func(testing.TB) *dbtest.DB{dbtest.RequirePostgres, dbtest.RequireMariaDB} {
		db := open(t)
		t.Run(db.Kind, func(t *testing.T) { runTwoRelays(t, db) })
	}
}

func runTwoRelays(t *testing.T, db *dbtest.DB) {
	n, keys := relayLoad()
	opts := func(extra ...outbox.RelayOption) []outbox.RelayOption {
		return append([]outbox.RelayOption{outbox.WithLease(time.Second), outbox.WithPublishTimeout(450 * time.Millisecond),
			outbox.WithPollInterval(50 * time.Millisecond), outbox.WithBackoff(10*time.Millisecond, 100*time.Millisecond),
			outbox.WithLogger(brokertest.Logger(t))}, extra...)
	}
	// explained counts what may publish a row twice: a publish that failed
	// (its outcome unknown: timed out, connection lost) and was retried, a
	// lost lease, an adapter's own re-send after a reconnect.
	var explained int64
	phase := func(name string, relays int, freeze bool) (time.Duration, counts, int64, []outbox.RelayStats) {
		explained = 0
		s, err := outbox.New(db.DB, dialectOf(db), outbox.WithTables(outbox.Tables{
			Outbox: db.Table(name + "_outbox"), Keys: db.Table(name + "_keys"), Inbox: db.Table(name + "_inbox")}))
		require.NoError(t, err)
		require.NoError(t, s.Migrate(context.Background()))
		writeSpread(t, s, n, keys)
		dest := newRabbitDest(t)
		pending := func() int64 { rows, _, err := s.Backlog(context.Background()); require.NoError(t, err); return rows }

		start := time.Now()
		var rs []*outbox.Relay
		var fr *freezer
		var adapters []*rabbitmq.Broker
		for i := range relays {
			rb := dest.open(t)
			adapters = append(adapters, rb)
			var b broker.Broker = rb
			if freeze && i == 0 {
				fr = &freezer{Broker: b, thaw: make(chan struct{})}
				b = fr
			}
			rs = append(rs, startRelay(t, s, b, opts(outbox.WithMaxInFlight(200))...))
		}
		if fr != nil {
			brokertest.WaitFor(t, 60*time.Second, "30% published", func() bool { return pending() <= int64(n)*7/10 })
			fr.frozen.Store(true)
			t.Logf("%s: relay %s frozen with %d rows left", name, rs[0].Owner(), pending())
		}
		brokertest.WaitFor(t, 120*time.Second, name+": all published", func() bool { return pending() == 0 })
		elapsed := time.Since(start)
		if fr != nil {
			close(fr.thaw)
			brokertest.WaitFor(t, 10*time.Second, "frozen relay settled", func() bool { return rs[0].Stats().InFlight == 0 })
		}
		var stats []outbox.RelayStats
		for _, r := range rs {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, r.Close(ctx))
			cancel()
			stats = append(stats, r.Stats())
			explained += r.Stats().Retried + r.Stats().LostLeases
		}
		for _, a := range adapters {
			explained += int64(a.Stats().Republished)
		}
		c := orderCounts(t, db, db.Table(name+"_outbox"), readRabbit(t, dest.ch, dest.queue))
		var held int64
		if fr != nil {
			held = fr.held.Load()
		}
		return elapsed, c, held, stats
	}

	t1, c1, _, _ := phase("one", 1, false)
	e1 := explained
	t2, c2, _, s2 := phase("two", 2, false)
	e2 := explained
	t3, c3, held, s3 := phase("takeover", 2, true)
	e3 := explained - held // what else may have published twice: a loaded machine's timeouts
	for _, c := range []counts{c1, c2, c3} {
		assert.Zero(t, c.lost, "lost")
		assert.Zero(t, c.unknown, "unknown")
		assert.Zero(t, c.outOfOrder, "keys out of order")
		assert.Equal(t, n, c.unique)
	}
	// Without a frozen relay, a duplicate needs a failed publish (outcome
	// unknown), a lost lease or an adapter's re-send: none happen on a
	// quiet machine; on a loaded one a publish can time out.
	assert.LessOrEqual(t, int64(c1.dups), e1, "one relay: duplicates <= failed publishes + lost leases + adapter re-sends")
	assert.LessOrEqual(t, int64(c2.dups), e2, "two relays: duplicates <= failed publishes + lost leases + adapter re-sends")
	assert.LessOrEqual(t, int64(c3.dups), held+e3, "duplicates <= rows in flight when the lease ran out + failed publishes, other lost leases, re-sends")
	assert.GreaterOrEqual(t, s3[0].LostLeases, held, "the frozen relay marked none of its held rows")
	assert.Positive(t, s2[0].Published)
	assert.Positive(t, s2[1].Published, "both relays worked")
	t.Logf("%s: %d events over %d keys, per-key order 100%% in all phases. one relay: %v (%.0f/s, %d duplicates); two relays: %v (%.0f/s, %.2fx, split %d/%d, %d duplicates); "+
		"takeover: %v, %d rows held by the frozen relay, %d duplicates, %d lost leases",
		db.Kind, n, keys, t1.Round(time.Millisecond), float64(n)/t1.Seconds(), c1.dups, t2.Round(time.Millisecond), float64(n)/t2.Seconds(),
		t1.Seconds()/t2.Seconds(), s2[0].Published, s2[1].Published, c2.dups, t3.Round(time.Millisecond), held, c3.dups, s3[0].LostLeases)
}

// gatedSink holds the dead letters of one key until open is closed.
type gatedSink struct {
	broker.DeadLetterSink
	key  string
	open chan struct{}
	puts atomic.Int64
}

func (g *gatedSink) Put(ctx context.Context, d broker.DeadLetter) error {
	if d.Message.Key == g.key {
		select {
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.puts.Add(1)
	return g.DeadLetterSink.Put(ctx, d)
}

// Poison on a real broker: one key's events are too large for the
// relay's adapter (its limit is lower than the store's), so they can never
// be published. Each of them is dead-lettered at its first attempt, in
// order, into the broker's dead-letter queue, while every other key flows:
// the poison key's first dead letter is held back until all other keys
// are published, so they cannot have waited for it.
func TestPoisonRabbitMQ(t *testing.T) {
	for _, open := range []func(testing.TB) *dbtest.DB{dbtest.RequirePostgres, dbtest.RequireMariaDB} {
		db := open(t)
		t.Run(db.Kind, func(t *testing.T) { runPoison(t, db) })
	}
}

func runPoison(t *testing.T, db *dbtest.DB) {
	const attempts = 1 // too large: dead at once
	s := newStore(t, db)
	dest := newRabbitDest(t, "order.#", "poison.#")
	var poison []broker.Message
	for range 3 {
		m := keyed("poison.created", "poison")
		m.Body = make([]byte, 2048)
		poison = append(poison, m)
	}
	write(t, s, poison...)
	n, keys := 1000, 20
	writeSpread(t, s, n, keys)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dlq, err := rabbitmq.NewDeadLetterSink(ctx, dest.cfg, rabbitmq.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	defer dlq.Close(context.Background())
	sink := &gatedSink{DeadLetterSink: dlq, key: "poison", open: make(chan struct{})}
	r := startRelay(t, s, dest.open(t, rabbitmq.WithMaxMessageSize(1024)), outbox.WithDeadLetter(sink),
		outbox.WithBackoff(10*time.Millisecond, 50*time.Millisecond), outbox.WithPollInterval(20*time.Millisecond),
		outbox.WithLogger(brokertest.Logger(t)))

	brokertest.WaitFor(t, 60*time.Second, "every other key published", func() bool { return count(t, db, "state = 1") == n })
	assert.Equal(t, attempts, stateOf(t, db, poison[0].ID).Attempts, "the poison head used its attempts")
	assert.Equal(t, 0, stateOf(t, db, poison[0].ID).State, "and is still held at the sink")
	assert.Equal(t, 0, stateOf(t, db, poison[1].ID).Attempts, "its key waits behind it")
	close(sink.open)
	brokertest.WaitFor(t, 30*time.Second, "poison key dead-lettered", func() bool { return count(t, db, "state = 2") == 3 })

	dead := readRabbitMsgs(t, dest.ch, dest.cfg.Exchange+".dlq")
	require.Len(t, dead, 3)
	for i, d := range dead {
		assert.Equal(t, poison[i].ID, d.MessageId, "dead-lettered in seq order")
		assert.Equal(t, fmt.Sprint(attempts), d.Headers[broker.HeaderDeadLetterAttempts])
		assert.Equal(t, broker.CategoryTooLarge, d.Headers[broker.HeaderDeadLetterCategory])
	}
	c := orderCounts(t, db, db.Table("outbox"), readRabbit(t, dest.ch, dest.queue))
	assert.Equal(t, n, c.unique)
	assert.Zero(t, c.outOfOrder)
	assert.Equal(t, 3, c.lost, "the three poison events are not in the queue (they are in the DLQ)")
	brokertest.WaitFor(t, 10*time.Second, "counted", func() bool { return r.Stats().DeadLettered == 3 })
	st := r.Stats()
	t.Logf("%s: poison key: 3 events dead-lettered after %d attempts each (%d retries); %d events of %d other keys published, in order, %d duplicates",
		db.Kind, attempts, st.Retried, c.unique, keys, c.dups)
	assert.Zero(t, st.Retried)
}

// readRabbitMsgs takes every message in queue.
func readRabbitMsgs(t *testing.T, ch *amqp.Channel, queue string) []amqp.Delivery {
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, d)
	}
}
