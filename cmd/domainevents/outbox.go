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
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	"github.com/domainevents/domainevents/outbox"
)

// orderNote is what a re-drive does to a key's order, said with every
// re-drive (outbox.Store.Redrive has the details).
const orderNote = "A re-driven event goes out after the events of its key (order) published while it was dead: consumers may see it after later ones."

// runOutbox lists or re-drives the dead rows of an outbox table.
func runOutbox(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return dispatch(ctx, log, out, "outbox", []subcommand{
		{"list", func(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
			return outboxRows(ctx, out, "list", args)
		}},
		{"redrive", func(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
			return outboxRows(ctx, out, "redrive", args)
		}},
	}, args)
}

// outboxFlags are the flags of outbox list and outbox redrive.
type outboxFlags struct {
	url, table string
	filter     outbox.DeadFilter
	body, dry  bool
}

func (f *outboxFlags) register(fs *flag.FlagSet, action string) {
	fs.StringVar(&f.url, "database-url", "", "the database: postgres://..., mysql://user:pass@tcp(host:3306)/db, or a SQLite file:path (default $DATABASE_URL)")
	fs.StringVar(&f.table, "outbox-table", outbox.DefaultTables.Outbox, "the outbox table (outbox.WithTables)")
	fs.StringVar(&f.filter.Key, "key", "", "only the rows of this aggregate key (order id)")
	fs.StringVar(&f.filter.ID, "id", "", "only the row of this event id")
	fs.StringVar(&f.filter.Name, "name", "", "only rows of this event name")
	fs.StringVar(&f.filter.Reason, "reason", "", "only rows whose last error contains this text, ignoring case")
	fs.DurationVar(&f.filter.OlderThan, "older-than", 0, "only rows dead for at least this long (e.g. 1h)")
	limit := 0
	if action == "list" {
		limit = 100
		fs.BoolVar(&f.body, "body", false, "print each row's body and headers too")
	} else {
		fs.BoolVar(&f.dry, "dry-run", false, "say what would be re-driven; change nothing")
	}
	fs.IntVar(&f.filter.Limit, "limit", limit, "at most this many rows (0: all)")
}

// outboxRows lists (action "list") or re-drives the dead rows the flags
// select.
func outboxRows(ctx context.Context, out io.Writer, action string, args []string) error {
	var f outboxFlags
	fs := newFlags("outbox "+action, map[string]string{
		"list":    "Lists the dead rows of the outbox table: events a relay gave up on, with why.",
		"redrive": "Puts the dead rows the flags select back to pending, for the relays to publish.\n" + orderNote,
	}[action])
	f.register(fs, action)
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.url == "" {
		f.url = os.Getenv("DATABASE_URL")
	}
	if f.filter.Limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (all) or more", f.filter.Limit)
	}
	if f.filter.OlderThan < 0 {
		return fmt.Errorf("--older-than %v: want a positive duration", f.filter.OlderThan)
	}
	db, dialect, err := openDatabase(ctx, f.url)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := outbox.New(db, dialect, outbox.WithTables(outbox.Tables{Outbox: f.table}))
	if err != nil {
		return fmt.Errorf("--outbox-table %q: %w", f.table, err)
	}
	var rows []outbox.DeadRow
	if action == "list" || f.dry {
		rows, err = store.DeadRows(ctx, f.filter)
	} else {
		rows, err = store.Redrive(ctx, f.filter)
	}
	for _, r := range rows {
		fmt.Fprintf(out, "%s  %-22s key=%s seq=%d  attempts=%d  dead=%s  %s\n", r.Message.ID, r.Message.Name, r.Message.Key,
			r.Seq, r.Attempts, r.DeadAt.UTC().Format(time.RFC3339), clip(r.Reason))
		if f.body {
			fmt.Fprintf(out, "    headers: %v\n    body: %s\n", r.Message.Headers, r.Message.Body)
		}
	}
	if err != nil {
		return fmt.Errorf("outbox %s: %s", action, scrub(err.Error(), f.url))
	}
	switch {
	case action == "list":
		fmt.Fprintf(out, "%d dead row(s) in %s", len(rows), f.table)
		if f.filter.Limit > 0 && len(rows) == f.filter.Limit {
			fmt.Fprintf(out, " (--limit %d: there may be more)", f.filter.Limit)
		}
		fmt.Fprintln(out)
	case f.dry:
		fmt.Fprintf(out, "would re-drive %d row(s) of %s (dry run: nothing changed).\n%s\n", len(rows), f.table, orderNote)
	default:
		fmt.Fprintf(out, "re-drove %d row(s) of %s: pending again, the relays publish them.\n%s\n", len(rows), f.table, orderNote)
	}
	return nil
}

// openDatabase opens url: postgres:// (pgx), mysql:// or user@tcp(...)
// (go-sql-driver), sqlite:// or file: or a path (modernc.org/sqlite). An
// error never quotes the password.
func openDatabase(ctx context.Context, url string) (*sql.DB, outbox.Dialect, error) {
	var driver, dsn string
	var dialect outbox.Dialect
	switch {
	case url == "":
		return nil, "", errors.New("--database-url (or DATABASE_URL) is empty: name the outbox's database")
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		driver, dsn, dialect = "pgx", url, outbox.Postgres
	case strings.HasPrefix(url, "mysql://"), strings.Contains(url, "@tcp("), strings.Contains(url, "@unix("):
		driver, dsn, dialect = "mysql", strings.TrimPrefix(url, "mysql://"), outbox.MySQL
	case strings.HasPrefix(url, "sqlite://"):
		driver, dsn, dialect = "sqlite", "file:"+strings.TrimPrefix(url, "sqlite://"), outbox.SQLite
	case strings.HasPrefix(url, "file:"), strings.HasSuffix(url, ".db"), strings.HasSuffix(url, ".sqlite"):
		driver, dsn, dialect = "sqlite", url, outbox.SQLite
	default:
		return nil, "", errors.New("--database-url (or DATABASE_URL): want postgres://..., mysql://user@tcp(host:port)/db, or a SQLite file:path")
	}
	if dialect == outbox.SQLite && !strings.Contains(dsn, "_txlock") {
		// The outbox wants SQLite's write lock taken at BEGIN, and to wait for it.
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "_pragma=busy_timeout(5000)&_txlock=immediate"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, "", fmt.Errorf("--database-url: %s", scrub(err.Error(), url))
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("--database-url: the %s database does not answer: %s", dialect, scrub(err.Error(), url))
	}
	return db, dialect, nil
}
