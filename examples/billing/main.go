package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite" (pure Go)

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

func main() {
	n := flag.Int("n", 0, "stop after this many orders billed (0: run until Ctrl-C)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Stdout, *n); err != nil {
		log.Error("billing failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out io.Writer, limit int) (err error) {
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.Queue == "" {
		cfg.Queue = envOr("EXAMPLE_QUEUE", "orders.events.all")
	}
	if cfg.ClientID == broker.DefaultConfig().ClientID {
		cfg.ClientID = "billing-example" // the Kafka consumer group
	}
	db, dialect, err := openDB(os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer db.Close()

	// The durable consumer: the inbox's tables, typed handlers, the
	// subscriber with the inbox in front of them.
	store, err := outbox.New(db, dialect)
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	b, err := newBilling(ctx, db, dialect, out, limit)
	if err != nil {
		return err
	}
	h, err := bridge.NewHandler(b.bus)
	if err != nil {
		return err
	}
	sub, err := domainevents.OpenSubscriber(ctx, cfg, h, domainevents.WithLogger(log), domainevents.WithInbox(store, "billing-example"))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, sub.Close(cctx)) // the subscriber, then the inbox
	}()

	log.Info("billing; Ctrl-C to stop", "config", cfg)
	select {
	case <-ctx.Done():
	case <-b.enough:
	}
	return nil
}

// billing is the service's own code: typed handlers on a bus, writing in
// the inbox's transaction.
type billing struct {
	bus    *eventbus.Bus
	enough chan struct{} // closed once limit orders are billed
}

func newBilling(ctx context.Context, db *sql.DB, dialect outbox.Dialect, out io.Writer, limit int) (*billing, error) {
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS billing_example_invoices (order_id VARCHAR(64) NOT NULL PRIMARY KEY, total VARCHAR(32) NOT NULL, status VARCHAR(32) NOT NULL)"); err != nil {
		return nil, fmt.Errorf("create billing_example_invoices: %w", err)
	}
	insert := "INSERT INTO billing_example_invoices (order_id, total, status) VALUES (?, ?, 'open')"
	cancel := "UPDATE billing_example_invoices SET status = 'void' WHERE order_id = ?"
	if dialect == outbox.Postgres {
		insert, cancel = strings.NewReplacer("?, ?", "$1, $2").Replace(insert), strings.Replace(cancel, "?", "$1", 1)
	}
	b := &billing{bus: eventbus.New(), enough: make(chan struct{})}
	billed := 0
	eventbus.Subscribe(b.bus, func(ctx context.Context, e events.OrderCreated) error {
		tx, _ := outbox.TxFrom(ctx) // the inbox's: the invoice commits with the event id
		if _, err := tx.ExecContext(ctx, insert, e.OrderID, e.Total.String()); err != nil {
			return err // rolled back and retried; dead-lettered after the last attempt
		}
		if _, err := fmt.Fprintf(out, "invoice for order %s: %s\n", e.OrderID, e.Total); err != nil {
			return err
		}
		if billed++; billed == limit { // the subscriber runs one handler at a time by default
			close(b.enough)
		}
		return nil
	})
	eventbus.Subscribe(b.bus, func(ctx context.Context, e events.OrderCancelled) error {
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, cancel, e.OrderID)
		return err
	})
	return b, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// openDB opens DATABASE_URL: postgres://... (pgx), or empty for SQLite in
// a new temporary directory (nothing to install).
func openDB(url string) (*sql.DB, outbox.Dialect, error) {
	driver, dsn, dialect := "pgx", url, outbox.Postgres
	switch {
	case url == "":
		dir, err := os.MkdirTemp("", "domainevents-billing-")
		if err != nil {
			return nil, "", err
		}
		driver, dialect = "sqlite", outbox.SQLite
		dsn = "file:" + filepath.Join(dir, "billing.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	case !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://"):
		return nil, "", errors.New("DATABASE_URL: want postgres://..., or empty for SQLite")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	return db, dialect, nil
}
