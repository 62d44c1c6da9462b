package domainevents_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/rabbittest"
	"github.com/domainevents/domainevents/outbox"
)

// announcing is a broker that tells which event it published.
type announcing chan string

func (a announcing) Publish(_ context.Context, m broker.Message) error {
	a <- m.Name + " of order " + m.Key
	return nil
}

func (a announcing) Close(context.Context) error { return nil }

// The README's outbox recipe: the order row and its event commit
// together; the relay, opened from the same configuration as Open,
// publishes the event once they did. (SQLite and a broker that prints here,
// so that it runs anywhere.)
func ExampleOpenRelay() {
	dir, _ := os.MkdirTemp("", "outbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	cfg := broker.DefaultConfig() // in a service: broker.ConfigFromEnv()
	printer := make(announcing)
	bus := eventbus.New()
	_, _ = db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL)`)
	orderID, userID := "6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5", "0c6b1f3e-9a8d-4e7f-b2a1-3c4d5e6f7a8b"

	store, err := outbox.New(db, outbox.SQLite, // outbox.Postgres, outbox.MySQL
		outbox.WithMaxMessageSize(domainevents.MaxMessageSize(cfg))) // what the broker would refuse fails the transaction
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // safe from every process at once
		log.Fatal(err)
	}
	fwd, err := bridge.NewForwarder(store) // the bus now publishes into the outbox
	if err != nil {
		log.Fatal(err)
	}
	fwd.Attach(bus)

	relay, err := domainevents.OpenRelay(ctx, cfg, store,
		domainevents.WithDisabledBroker(printer)) // cfg.Enabled is false here: print instead of RabbitMQ or Kafka
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close(ctx) // the relay, then its adapter

	err = store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, user_id) VALUES (?, ?)`, orderID, userID); err != nil {
			return err
		}
		return eventbus.Publish(ctx, bus, events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated})
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-printer)
	// Output: order.created of order 6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5
}

func TestMaxMessageSize(t *testing.T) {
	cfg := broker.DefaultConfig()
	assert.Equal(t, outbox.DefaultMaxMessageSize, domainevents.MaxMessageSize(cfg), "disabled")
	cfg.Enabled = true
	assert.Equal(t, 16<<20, domainevents.MaxMessageSize(cfg), "rabbitmq")
	cfg.Type = broker.Kafka
	assert.Equal(t, 1<<20-1024, domainevents.MaxMessageSize(cfg), "kafka")
}

func TestOpenRelayBadInput(t *testing.T) {
	ctx := context.Background()
	_, err := domainevents.OpenRelay(ctx, broker.DefaultConfig(), nil)
	require.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "store is nil")

	db := dbtest.OpenSQLite(t)
	s, err := outbox.New(db.DB, outbox.SQLite)
	require.NoError(t, err)
	_, err = domainevents.OpenRelay(ctx, broker.DefaultConfig(), s, domainevents.WithOutboxRelay(outbox.WithBatchSize(0)))
	require.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "WithBatchSize(0)")
	bad := broker.DefaultConfig()
	bad.Enabled, bad.Type = true, "nats"
	_, err = domainevents.OpenRelay(ctx, bad, s)
	require.ErrorIs(t, err, broker.ErrInvalid)
}

// OpenRelay starts while RabbitMQ is down (the README's recipe used to
// fail at once: connection refused), keeps the rows, says so in Health,
// and publishes them once the broker is there; Close closes the relay and
// then the adapter.
func TestOpenRelayStartsWhileBrokerDown(t *testing.T) {
	admin := requireRabbit(t)
	proxy := rabbittest.NewProxy(t, rabbittest.Addr())
	proxy.Refuse()
	cfg := rabbitConfig(t, admin, proxy.Addr())
	db := dbtest.OpenSQLite(t)
	s, err := outbox.New(db.DB, outbox.SQLite, outbox.WithMaxMessageSize(domainevents.MaxMessageSize(cfg)))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := domainevents.OpenRelay(ctx, cfg, s, domainevents.WithLogger(brokertest.Logger(t)),
		domainevents.WithOutboxRelay(outbox.WithPublishTimeout(time.Second), outbox.WithLease(3*time.Second), outbox.WithPollInterval(50*time.Millisecond)))
	require.NoError(t, err, "starts while the broker is down")
	assert.Contains(t, r.Destination(), cfg.Exchange)
	var ids []string
	require.NoError(t, s.Transact(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
		for i := range 10 {
			m := brokertest.NewMessage("order.created")
			m.Key = fmt.Sprint("order-", i%3)
			ids = append(ids, m.ID)
			if err := s.Publish(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}))
	brokertest.WaitFor(t, 30*time.Second, "the relay tried", func() bool { return r.Stats().Retried >= 3 })
	err = r.Health(context.Background())
	require.ErrorIs(t, err, broker.ErrUnavailable)
	t.Logf("Health while the broker is down: %v", err)
	rows, _, err := s.Backlog(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(10), rows, "pending")

	proxy.Accept()
	brokertest.WaitFor(t, 60*time.Second, "published", func() bool {
		rows, _, err := s.Backlog(context.Background())
		return err == nil && rows == 0
	})
	got := drainIDs(t, admin, cfg.Queue, 10, 30*time.Second)
	for _, id := range ids {
		assert.Equal(t, 1, got[id], id)
	}
	brokertest.WaitFor(t, 30*time.Second, "healthy", func() bool { return r.Health(context.Background()) == nil })
	require.NoError(t, r.Close(context.Background()))
	require.NoError(t, r.Close(context.Background()), "second Close")
	assert.ErrorIs(t, r.Health(context.Background()), broker.ErrClosed)
	brokertest.WaitFor(t, 30*time.Second, "the adapter's connection closed", func() bool { return proxy.Conns() == 0 })
}

// Unroutable through OpenRelay: the rows wait, its Health says what
// RabbitMQ refuses; binding a queue publishes them.
func TestOpenRelayUnroutableInHealth(t *testing.T) {
	admin := requireRabbit(t)
	cfg := rabbitConfig(t, admin, rabbittest.Addr())
	cfg.Queue = "" // nothing bound: every event is unroutable
	queue := cfg.Exchange + ".q"
	db := dbtest.OpenSQLite(t)
	s, err := outbox.New(db.DB, outbox.SQLite)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	r, err := domainevents.OpenRelay(context.Background(), cfg, s, domainevents.WithLogger(brokertest.Logger(t)),
		domainevents.WithOutboxRelay(outbox.WithBrokerBackoff(100*time.Millisecond), outbox.WithPollInterval(50*time.Millisecond)))
	require.NoError(t, err)
	defer r.Close(context.Background())
	m := brokertest.NewMessage("order.created")
	m.Key = uuid.NewString()
	require.NoError(t, s.Transact(context.Background(), func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, m) }))

	brokertest.WaitFor(t, 30*time.Second, "Health says unroutable", func() bool {
		return errors.Is(r.Health(context.Background()), broker.ErrUnroutable)
	})
	t.Logf("Health: %v", r.Health(context.Background()))
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	_, err = ch.QueueDeclare(queue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(queue, "#", cfg.Exchange, false, nil))
	got := drainIDs(t, admin, queue, 1, 60*time.Second)
	assert.Equal(t, 1, got[m.ID])
	assert.Zero(t, r.Stats().DeadLettered)
}

// plainMiddleware hides what it wraps, Health included.
type plainMiddleware struct{ next broker.Broker }

func (p plainMiddleware) Publish(ctx context.Context, m broker.Message) error {
	return p.next.Publish(ctx, m)
}
func (p plainMiddleware) Close(ctx context.Context) error { return p.next.Close(ctx) }

// A middleware that does not pass Health on does not hide the adapter's
// from the relay: its Health still says the broker is away.
func TestOpenRelayKeepsTheAdaptersHealthUnderMiddleware(t *testing.T) {
	admin := requireRabbit(t)
	proxy := rabbittest.NewProxy(t, rabbittest.Addr())
	proxy.Refuse()
	cfg := rabbitConfig(t, admin, proxy.Addr())
	db := dbtest.OpenSQLite(t)
	s, err := outbox.New(db.DB, outbox.SQLite)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	r, err := domainevents.OpenRelay(context.Background(), cfg, s, domainevents.WithLogger(brokertest.Logger(t)),
		domainevents.WithPublishMiddleware(func(next broker.Broker) broker.Broker { return plainMiddleware{next} }))
	require.NoError(t, err)
	defer r.Close(context.Background())
	err = r.Health(context.Background())
	require.ErrorIs(t, err, broker.ErrUnavailable)
	assert.Contains(t, err.Error(), "not connected")
}
