package outbox_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/rabbittest"
	"github.com/domainevents/domainevents/internal/testenv"
	"github.com/domainevents/domainevents/outbox"
)

// The broker goes away while events are committed, for a long time by the
// relay's standards (many publish timeouts, far more attempts than
// WithMaxAttempts), and comes back: no row dies, every event is published
// soon after the return, each key's events in order (counted by event id
// on what the broker holds).

// outage is one outage run: events over keys, committed while the broker
// is away, which it stays for length.
type outage struct {
	events, keys int
	length       time.Duration
	opts         []outbox.RelayOption
	// maxRecovery, when set, is asserted: the acceptance bound of the
	// long tier. The quick variants log the recovery time instead.
	maxRecovery time.Duration
}

// outageBroker is the broker side of an outage run.
type outageBroker struct {
	adapter broker.Broker
	down    func() // the broker goes away: connections cut, new ones refused
	up      func()
	read    func() []arrival
}

// run commits o.events while the broker is down, keeps it down for
// o.length, brings it back, and checks what arrived.
func (o outage) run(t *testing.T, db *dbtest.DB, ob outageBroker) {
	s := newStore(t, db)
	r := startRelay(t, s, ob.adapter, append([]outbox.RelayOption{outbox.WithLogger(brokertest.Logger(t))}, o.opts...)...)
	pending := func() int64 { n, _, err := s.Backlog(context.Background()); require.NoError(t, err); return n }

	ob.down()
	start := time.Now()
	writeSpread(t, s, o.events, o.keys)
	brokertest.WaitFor(t, 60*time.Second, "the relay tried during the outage", func() bool { return r.Stats().Retried >= int64(o.keys) })
	if rest := o.length - time.Since(start); rest > 0 {
		time.Sleep(rest) // the outage itself, not a wait for something
	}
	require.Zero(t, count(t, db, "state = 2"), "no row dead during the outage")
	require.Error(t, r.Health(context.Background()), "Health says the broker is away")
	var maxAttempts int
	require.NoError(t, db.QueryRow("SELECT COALESCE(max(attempts), 0) FROM "+db.Table("outbox")).Scan(&maxAttempts))

	ob.up()
	back := time.Now()
	t.Logf("the broker is back at %s", back.UTC().Format("15:04:05.000"))
	brokertest.WaitFor(t, 5*time.Minute, "every event published after the return", func() bool { return pending() == 0 })
	recovery := time.Since(back)

	assert.Zero(t, count(t, db, "state = 2"), "dead rows")
	assert.Zero(t, r.Stats().DeadLettered)
	c := orderCounts(t, db, db.Table("outbox"), ob.read())
	assert.Equal(t, o.events, c.unique, "published")
	assert.Zero(t, c.lost, "lost")
	assert.Zero(t, c.unknown, "unknown")
	assert.Zero(t, c.outOfOrder, "per-key inversions")
	brokertest.WaitFor(t, 60*time.Second, "Health clears", func() bool { return r.Health(context.Background()) == nil })
	t.Logf("%d events over %d keys, outage %v (rows claimed up to %d times): 0 dead, %d published within %v of the broker's return, %d per-key inversions, %d duplicates (%d retries)",
		o.events, o.keys, o.length.Round(time.Second), maxAttempts, c.unique, recovery.Round(time.Millisecond), c.outOfOrder, c.dups, r.Stats().Retried)
	if o.maxRecovery > 0 {
		assert.LessOrEqual(t, recovery, o.maxRecovery, "published within %v of the broker's return", o.maxRecovery)
	}
}

// rabbitOutage is a lazily connecting RabbitMQ adapter behind a fault
// proxy, publishing to a fresh exchange with a queue bound to everything.
func rabbitOutage(t *testing.T) outageBroker {
	dest := newRabbitDest(t, "#")
	proxy := rabbittest.NewProxy(t, rabbitAddr())
	cfg := dest.cfg
	cfg.Addresses = []string{proxy.Addr()}
	b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLazyConnect(), rabbitmq.WithLogger(brokertest.Logger(t)),
		rabbitmq.WithQueue(rabbitmq.Queue{Name: dest.queue, Keys: []string{"#"}}))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	brokertest.WaitFor(t, 30*time.Second, "the adapter connected and declared its queue", func() bool { return b.Health(context.Background()) == nil })
	return outageBroker{adapter: b, down: proxy.Refuse, up: proxy.Accept,
		read: func() []arrival { return readRabbit(t, dest.ch, dest.queue) }}
}

// kafkaOutage is a lazily connecting Kafka adapter on an in-process kfake
// cluster whose listener can cut and refuse connections.
func kafkaOutage(t *testing.T) outageBroker {
	topic := "det.outbox." + uuid.NewString()[:8]
	sw := &switchListeners{}
	c, err := kfake.NewCluster(kfake.SeedTopics(3, topic), kfake.ListenFn(sw.listen))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg := broker.DefaultConfig()
	cfg.Enabled, cfg.Type, cfg.Addresses, cfg.Topic = true, broker.Kafka, c.ListenAddrs(), topic
	b, err := kafka.New(context.Background(), cfg, kafka.WithLazyConnect(), kafka.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	brokertest.WaitFor(t, 30*time.Second, "the adapter connected", func() bool { return b.Health(context.Background()) == nil })
	return outageBroker{adapter: b, down: func() { sw.set(true) }, up: func() { sw.set(false) },
		read: func() []arrival { return readKafka(t, c.ListenAddrs(), topic) }}
}

// The quick variants: the 5-minute outage compressed to seconds, the
// relay's timings shrunk to match (publish timeout, lease, poll, broker
// backoff), so that rows are claimed more times than WithMaxAttempts
// during it. (Not below a second per publish: sarama's own retries back
// off up to 2 s, and a relay giving up sooner only piles up copies in the
// producer.)
func quickOutage(length time.Duration) outage {
	return outage{events: 1000, keys: 100, length: length, opts: []outbox.RelayOption{
		outbox.WithMaxAttempts(3), outbox.WithPublishTimeout(time.Second), outbox.WithLease(3 * time.Second),
		outbox.WithPollInterval(100 * time.Millisecond), outbox.WithBrokerBackoff(500 * time.Millisecond)}}
}

func TestOutageRabbitMQ(t *testing.T) {
	quickOutage(6*time.Second).run(t, dbtest.RequirePostgres(t), rabbitOutage(t))
}

// Kafka's outage lasts longer than sarama's circuit breaker (each
// partition's producer stops trying for 10 s after three failures), as a
// real one does: a shorter one ends while the breaker is still open, and
// the return is then seen only when it closes.
func TestOutageKafka(t *testing.T) {
	quickOutage(12*time.Second).run(t, dbtest.RequireMariaDB(t), kafkaOutage(t))
}

// Exactly the independent check: WithMaxAttempts(3) and every other
// option at its default (backoff 1s to 5m, publish timeout 10s), a lazily
// connecting RabbitMQ adapter, a 20 s outage, 200 committed events: none
// dead, all published within 10 s of the broker's return.
func TestOutageRabbitMQIndependentCheck(t *testing.T) {
	testenv.Long(t, "a 20 s RabbitMQ outage with the relay's default timings")
	outage{events: 200, keys: 200, length: 20 * time.Second, maxRecovery: 10 * time.Second,
		opts: []outbox.RelayOption{outbox.WithMaxAttempts(3)}}.run(t, dbtest.RequirePostgres(t), rabbitOutage(t))
}

// A 5-minute outage, uncompressed, 1,000 rows over 100 keys, default
// timings: none dead, all published within 10 s of the return, in order.
func TestOutageFiveMinutesRabbitMQ(t *testing.T) {
	testenv.Long(t, "a 5-minute RabbitMQ outage")
	t.Parallel() // mostly waiting: runs beside the Kafka one
	outage{events: 1000, keys: 100, length: 5 * time.Minute, maxRecovery: 10 * time.Second,
		opts: []outbox.RelayOption{outbox.WithMaxAttempts(3)}}.run(t, dbtest.RequirePostgres(t), rabbitOutage(t))
}

func TestOutageFiveMinutesKafka(t *testing.T) {
	testenv.Long(t, "a 5-minute Kafka outage")
	t.Parallel()
	outage{events: 1000, keys: 100, length: 5 * time.Minute, maxRecovery: 10 * time.Second,
		opts: []outbox.RelayOption{outbox.WithMaxAttempts(3)}}.run(t, dbtest.RequireMariaDB(t), kafkaOutage(t))
}

// Unroutable on a real broker: events whose name no queue is bound to are
// held (pending, not dead) while the other keys flow, and Health says so
// with RabbitMQ's reason; once an operator binds a queue, they are
// published, in order.
func TestUnroutableHeldUntilBoundRabbitMQ(t *testing.T) {
	db := dbtest.RequirePostgres(t)
	s := newStore(t, db)
	dest := newRabbitDest(t, "order.#")
	var held []broker.Message
	for range 5 {
		held = append(held, keyed("invoice.created", "invoice-1"))
	}
	write(t, s, held...)
	writeSpread(t, s, 200, 10)
	r := startRelay(t, s, dest.open(t), outbox.WithMaxAttempts(1), outbox.WithBrokerBackoff(200*time.Millisecond),
		outbox.WithPublishTimeout(time.Second), outbox.WithLease(3*time.Second),
		outbox.WithPollInterval(50*time.Millisecond), outbox.WithLogger(brokertest.Logger(t)))

	brokertest.WaitFor(t, 60*time.Second, "the other keys published", func() bool { return count(t, db, "state = 1") == 200 })
	brokertest.WaitFor(t, 60*time.Second, "the held head tried again", func() bool { return stateOf(t, db, held[0].ID).Attempts >= 3 })
	err := r.Health(context.Background())
	require.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), "NO_ROUTE")
	t.Logf("Health while unroutable: %v", err)
	assert.Zero(t, count(t, db, "state = 2"), "none dead")
	assert.Equal(t, 5, count(t, db, "state = 0"), "held")

	require.NoError(t, dest.ch.QueueBind(dest.queue, "invoice.#", dest.cfg.Exchange, false, nil)) // the operator's fix
	brokertest.WaitFor(t, 60*time.Second, "the held events published", func() bool { return count(t, db, "state = 1") == 205 })
	c := orderCounts(t, db, db.Table("outbox"), readRabbit(t, dest.ch, dest.queue))
	assert.Equal(t, 205, c.unique)
	assert.Zero(t, c.outOfOrder)
	brokertest.WaitFor(t, 60*time.Second, "Health clears", func() bool { return r.Health(context.Background()) == nil })
}

// Wrong credentials: the adapter cannot log in, the rows stay pending
// (none dead), and Health reports the refusal; a relay with the right
// credentials then publishes them. (While the adapter's Health says it is
// not connected, the relay claims nothing more.)
func TestWrongPasswordHeldRabbitMQ(t *testing.T) {
	db := dbtest.RequirePostgres(t)
	s := newStore(t, db)
	dest := newRabbitDest(t, "#")
	writeSpread(t, s, 20, 5)
	bad := dest.cfg
	bad.Password = broker.NewSecret("not-the-password")
	b, err := rabbitmq.New(context.Background(), bad, rabbitmq.WithLazyConnect(), rabbitmq.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	r, err := outbox.NewRelay(s, b, outbox.WithMaxAttempts(1), outbox.WithPublishTimeout(300*time.Millisecond),
		outbox.WithLease(time.Second), outbox.WithPollInterval(50*time.Millisecond), outbox.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	brokertest.WaitFor(t, 60*time.Second, "the heads tried", func() bool { return r.Stats().Retried >= 5 })
	brokertest.WaitFor(t, 60*time.Second, "Health names the login failure", func() bool {
		err := r.Health(context.Background())
		return err != nil && strings.Contains(strings.ToLower(err.Error()), "password")
	})
	err = r.Health(context.Background())
	require.Error(t, err)
	t.Logf("Health with a wrong password: %v", err)
	assert.ErrorIs(t, err, broker.ErrUnauthorized, "a refused login is a configuration problem, not an outage")
	assert.Contains(t, strings.ToLower(err.Error()), "password")
	assert.NotContains(t, err.Error(), "not-the-password")
	assert.Zero(t, count(t, db, "state = 2"), "none dead")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, r.Close(ctx))
	require.NoError(t, b.Close(ctx))

	startRelay(t, s, dest.open(t), outbox.WithPollInterval(50*time.Millisecond), outbox.WithLogger(brokertest.Logger(t)))
	brokertest.WaitFor(t, 60*time.Second, "published with the right password", func() bool { return count(t, db, "state = 1") == 20 })
}

// switchListeners wraps kfake's listeners: while down, every connection
// is cut and each new one closed at once, as a cluster that is away.
type switchListeners struct {
	mu   sync.Mutex
	all  []*switchListener
	down atomic.Bool
}

func (s *switchListeners) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	l := &switchListener{Listener: ln, s: s, conns: map[net.Conn]struct{}{}}
	s.mu.Lock()
	s.all = append(s.all, l)
	s.mu.Unlock()
	return l, nil
}

func (s *switchListeners) set(down bool) {
	s.down.Store(down)
	if !down {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.all {
		l.mu.Lock()
		for c := range l.conns {
			_ = c.Close()
			delete(l.conns, c)
		}
		l.mu.Unlock()
	}
}

type switchListener struct {
	net.Listener
	s     *switchListeners
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.down.Load() {
			_ = c.Close()
			continue
		}
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		return c, nil
	}
}
