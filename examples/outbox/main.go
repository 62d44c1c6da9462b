package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite" (pure Go)

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := run(ctx, log, os.Stdout); err != nil {
		log.Error("outbox example failed", "err", err)
		os.Exit(1)
	}
}

// result says what happened, for the test.
type result struct {
	Committed, RolledBack string // order ids
}

func run(ctx context.Context, log *slog.Logger, out io.Writer) (res result, err error) {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return res, fmt.Errorf("configuration: %w", err)
	}
	db, dialect, where, err := openDB(os.Getenv("DATABASE_URL"))
	if err != nil {
		return res, err
	}
	defer db.Close()
	prefix := os.Getenv("OUTBOX_TABLE_PREFIX") // lets tests run side by side; empty in real use
	store, err := outbox.New(db, dialect, outbox.WithTables(outbox.Tables{
		Outbox: prefix + "domainevents_outbox", Keys: prefix + "domainevents_outbox_keys", Inbox: prefix + "domainevents_inbox"}),
		outbox.WithMaxMessageSize(domainevents.MaxMessageSize(cfg))) // what the broker would refuse fails the transaction
	if err != nil {
		return res, err
	}
	if err := store.Migrate(ctx); err != nil { // safe from every process at once
		return res, err
	}
	orders := prefix + "outbox_example_orders"
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+orders+" (id VARCHAR(64) NOT NULL PRIMARY KEY, user_id VARCHAR(64) NOT NULL, status VARCHAR(32) NOT NULL)"); err != nil {
		return res, fmt.Errorf("create %s: %w", orders, err)
	}
	log.Info("database ready", "database", where, "dialect", dialect)

	// The relay, from the same configuration as domainevents.Open: it
	// starts while the broker is down (the rows wait in the table), and
	// prints each body the broker accepted.
	seen := make(chan string, 1024)
	opts := []domainevents.RelayOption{domainevents.WithLogger(log),
		domainevents.WithPublishMiddleware(func(next broker.Broker) broker.Broker { return &printing{Broker: next, out: out, seen: seen} }),
		domainevents.WithOutboxRelay(outbox.WithPollInterval(200 * time.Millisecond))}
	if cfg.Type == broker.RabbitMQ {
		q := os.Getenv("EXAMPLE_QUEUE")
		if q == "" {
			q = "orders.events.all"
		}
		opts = append(opts, domainevents.WithRabbitMQ(rabbitmq.WithQueue(rabbitmq.Queue{Name: q, Keys: []string{"order.#"}})))
	}
	relay, err := domainevents.OpenRelay(ctx, cfg, store, opts...)
	if err != nil {
		return res, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, relay.Close(cctx)) // the relay, then its adapter
	}()
	dest := relay.Destination()
	if !cfg.Enabled {
		dest = "stdout (MESSAGE_BROKER_ENABLED is false: each body is printed, not sent)"
	}
	log.Info("relay running", "destination", dest)

	// Application code: the bus publishes into the outbox, in the
	// transaction the ctx carries.
	fwd, err := bridge.NewForwarder(store)
	if err != nil {
		return res, err
	}
	bus := eventbus.New()
	fwd.Attach(bus)

	insert := "INSERT INTO " + orders + " (id, user_id, status) VALUES (?, ?, ?)"
	if dialect == outbox.Postgres {
		insert = "INSERT INTO " + orders + " (id, user_id, status) VALUES ($1, $2, $3)"
	}
	createOrder := func(ctx context.Context, tx *sql.Tx, orderID, userID string) error {
		if _, err := tx.ExecContext(ctx, insert, orderID, userID, string(events.StatusInProgress)); err != nil {
			return err
		}
		err := eventbus.Publish(ctx, bus, events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated,
			Items: []events.OrderItem{{ProductID: "sku-1001", Quantity: 2, Price: events.Cents(500000)}}, Total: events.Cents(1000000)})
		if err != nil {
			return err
		}
		return eventbus.Publish(ctx, bus, events.OrderStatusUpdated{OrderID: orderID, UserID: userID,
			OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress})
	}

	// 1. An order and its two events commit together.
	res.Committed = uuid.NewString()
	if err := store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return createOrder(ctx, tx, res.Committed, uuid.NewString())
	}); err != nil {
		return res, fmt.Errorf("order %s: %w", res.Committed, err)
	}
	log.Info("order committed with its events", "order", res.Committed)

	// 2. An order whose transaction fails after publishing: neither the
	// row nor its events exist.
	res.RolledBack = uuid.NewString()
	errDeclined := errors.New("payment declined")
	err = store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := createOrder(ctx, tx, res.RolledBack, uuid.NewString()); err != nil {
			return err
		}
		return errDeclined
	})
	if !errors.Is(err, errDeclined) {
		return res, fmt.Errorf("order %s: want the decline, got %v", res.RolledBack, err)
	}
	log.Info("order rolled back: no row, no event", "order", res.RolledBack, "reason", err)

	// Wait until the relay has published the committed order's events.
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for got := 0; got < 2; {
		select {
		case id := <-seen:
			if id == res.Committed {
				got++
			}
		case <-wait.Done():
			return res, fmt.Errorf("the relay did not publish order %s's events: %w", res.Committed, wait.Err())
		}
	}
	var rows int
	if err := db.QueryRowContext(ctx, strings.Replace("SELECT count(*) FROM "+orders+" WHERE id = ?", "?", placeholder(dialect), 1), res.RolledBack).Scan(&rows); err != nil {
		return res, err
	}
	if rows != 0 {
		return res, fmt.Errorf("order %s was rolled back but its row exists", res.RolledBack)
	}
	log.Info("published the committed order's 2 events; the rolled-back order has neither row nor event", "destination", dest)
	return res, nil
}

func placeholder(d outbox.Dialect) string {
	if d == outbox.Postgres {
		return "$1"
	}
	return "?"
}

// openDB opens DATABASE_URL: postgres://... (pgx), mysql://user@tcp(host:3306)/db
// or user@tcp(host:3306)/db (go-sql-driver), empty for SQLite in a new
// temporary directory (nothing to install).
func openDB(url string) (*sql.DB, outbox.Dialect, string, error) {
	var driver, dsn, where string
	var dialect outbox.Dialect
	switch {
	case url == "":
		dir, err := os.MkdirTemp("", "domainevents-outbox-")
		if err != nil {
			return nil, "", "", err
		}
		path := filepath.Join(dir, "orders.db")
		driver, dialect, where = "sqlite", outbox.SQLite, "SQLite "+path
		dsn = "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		driver, dsn, dialect, where = "pgx", url, outbox.Postgres, "PostgreSQL"
	case strings.HasPrefix(url, "mysql://"), strings.Contains(url, "@tcp("):
		driver, dsn, dialect, where = "mysql", strings.TrimPrefix(url, "mysql://"), outbox.MySQL, "MariaDB/MySQL"
	default:
		return nil, "", "", fmt.Errorf("DATABASE_URL: want postgres://..., mysql://user@tcp(host:port)/db, or empty for SQLite")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, "", "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, "", "", fmt.Errorf("DATABASE_URL: %s does not answer: %w", where, err)
	}
	return db, dialect, where, nil
}

// printing writes each body the broker accepted as one line on out, and
// reports the order it belongs to.
type printing struct {
	broker.Broker
	mu   sync.Mutex // the relay publishes concurrently
	out  io.Writer
	seen chan string
}

func (p *printing) Publish(ctx context.Context, m broker.Message) error {
	if err := p.Broker.Publish(ctx, m); err != nil {
		return err
	}
	p.mu.Lock()
	_, err := fmt.Fprintf(p.out, "%s\n", m.Body)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case p.seen <- m.Key:
	default:
	}
	return nil
}
