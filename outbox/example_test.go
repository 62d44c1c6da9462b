package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

// announcing is a broker that tells which event it published.
type announcing chan string

func (a announcing) Publish(_ context.Context, m broker.Message) error {
	a <- m.Name + " of order " + m.Key
	return nil
}

func (a announcing) Close(context.Context) error { return nil }

// The README's snippet: the order row and its event commit together; the
// relay publishes the event once they did. (SQLite here so that it runs
// anywhere; open PostgreSQL or MariaDB the same way with their driver.)
func Example() {
	dir, _ := os.MkdirTemp("", "outbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var b broker.Broker = make(announcing) // in a service: rabbitmq.New or kafka.New, as before
	bus := eventbus.New()
	_, _ = db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL)`)
	orderID, userID := "6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5", "0c6b1f3e-9a8d-4e7f-b2a1-3c4d5e6f7a8b"

	// --- snippet: docs/outbox.md, the outbox recipe ---
	store, err := outbox.New(db, outbox.SQLite) // outbox.Postgres, outbox.MySQL
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // or apply outbox/sql/<dialect>.sql yourself
		log.Fatal(err)
	}
	fwd, err := bridge.NewForwarder(store) // the bus now publishes into the outbox
	if err != nil {
		log.Fatal(err)
	}
	fwd.Attach(bus)

	relay, err := outbox.NewRelay(store, b) // publishes what committed, through your broker
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close(ctx) // before b.Close

	err = store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, user_id) VALUES (?, ?)`, orderID, userID); err != nil {
			return err
		}
		return eventbus.Publish(ctx, bus, events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated})
	})
	// err == nil: the order row and its event are committed, and the relay
	// publishes the event. err != nil: neither exists.
	// --- end of snippet ---
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-b.(announcing))
	// Output: order.created of order 6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5
}

// On the consuming side, the inbox runs a handler once per event id and
// commits its writes with the inbox row before the delivery is
// acknowledged.
func ExampleInbox_Handler() {
	dir, _ := os.MkdirTemp("", "inbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "billing.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	store, _ := outbox.New(db, outbox.SQLite)
	_ = store.Migrate(ctx)
	_, _ = db.Exec(`CREATE TABLE invoices (order_id TEXT PRIMARY KEY)`)

	in, err := outbox.NewInbox(store, "billing")
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close(ctx)
	h := in.Handler(func(ctx context.Context, d broker.Delivery) error {
		tx, _ := outbox.TxFrom(ctx) // commits with the inbox row, or not at all
		_, err := tx.ExecContext(ctx, `INSERT INTO invoices (order_id) VALUES (?)`, d.Key)
		return err
	})
	// h goes to rabbitmq.NewSubscriber or kafka.NewSubscriber; here, the
	// same delivery twice:
	d := broker.Delivery{Message: broker.Message{ID: "e-1", Name: "order.created", Key: "order-1"}}
	fmt.Println(h(ctx, d), h(ctx, d))
	var n int
	_ = db.QueryRow(`SELECT count(*) FROM invoices`).Scan(&n)
	fmt.Println("invoices:", n)
	// Output:
	// <nil> <nil>
	// invoices: 1
}

// refusing is a broker that refuses every message for good, as a broker
// does with one too large for it.
type refusing struct{}

func (refusing) Publish(_ context.Context, m broker.Message) error {
	return &broker.Error{Op: "example", Kind: broker.ErrTooLarge, Err: fmt.Errorf("message %s is too large", m.ID)}
}

func (refusing) Close(context.Context) error { return nil }

// A row the relay gave up on is listed with why, and put back to pending
// once the cause is fixed; a relay then publishes it.
func ExampleStore_Redrive() {
	dir, _ := os.MkdirTemp("", "redrive-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	store, _ := outbox.New(db, outbox.SQLite)
	_ = store.Migrate(ctx)
	m := broker.Message{ID: "e-1", Name: "order.created", Key: "order-1", Body: []byte(`{}`)}
	_ = store.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error { return store.Publish(ctx, m) })

	quiet := outbox.WithLogger(slog.New(slog.DiscardHandler))
	relay, _ := outbox.NewRelay(store, refusing{}, quiet)
	var dead []outbox.DeadRow
	for len(dead) == 0 { // the relay dead-letters it at its first failure
		time.Sleep(10 * time.Millisecond)
		dead, _ = store.DeadRows(ctx, outbox.DeadFilter{Key: "order-1"})
	}
	_ = relay.Close(ctx)
	fmt.Println(dead[0].Message.ID, "dead:", dead[0].Reason)

	// The cause is fixed (the broker takes it now): re-drive it.
	back, _ := store.Redrive(ctx, outbox.DeadFilter{Reason: "too large"})
	fmt.Println("re-driven:", len(back))
	b := make(announcing)
	relay, _ = outbox.NewRelay(store, b, quiet)
	defer relay.Close(ctx)
	fmt.Println(<-b)
	// Output:
	// e-1 dead: example: message too large: message e-1 is too large
	// re-driven: 1
	// order.created of order order-1
}
