// Package dbtest gives tests a real database: PostgreSQL and MariaDB on
// the machine's servers, SQLite in a temporary file. Each test gets a
// unique table prefix, and its tables are dropped when it ends. Without a
// server a test skips, saying how to start it; in CI (CI set) it fails.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

// DB is a test database.
type DB struct {
	*sql.DB
	// Kind is "postgres", "mysql" or "sqlite" (the outbox dialect names).
	Kind string
	// Driver is the database/sql driver name: "pgx", "mysql" or "sqlite".
	Driver string
	// DSN opens the same database again (a child process, a second pool).
	DSN string
	// Prefix is this test's table prefix, e.g. "det_1a2b3c4d_".
	Prefix string
}

// Table returns the prefixed table name.
func (d *DB) Table(name string) string { return d.Prefix + name }

// PostgresDSN is POSTGRES_DSN or the machine's server.
func PostgresDSN() string {
	if v := os.Getenv("POSTGRES_DSN"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// MariaDBDSN is MARIADB_DSN or the machine's server.
func MariaDBDSN() string {
	if v := os.Getenv("MARIADB_DSN"); v != "" {
		return v
	}
	return "root@tcp(127.0.0.1:3306)/test"
}

// SQLiteDSN opens path with the settings the outbox wants from SQLite: a
// busy timeout, WAL, and immediate transactions (a writer takes the write
// lock at BEGIN, so it never fails to upgrade a read lock).
func SQLiteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// Open opens driver/dsn of kind and checks it answers; without a server it
// skips t (fails it in CI) with how to start one.
func Open(t testing.TB, kind, driver, dsn, howToStart string) *DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		msg := fmt.Sprintf("%s is not reachable (%v). %s", kind, err, howToStart)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	d := &DB{DB: db, Kind: kind, Driver: driver, DSN: dsn, Prefix: "det_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"}
	t.Cleanup(func() {
		d.dropTables(t)
		_ = db.Close()
	})
	return d
}

// RequirePostgres returns the PostgreSQL test database (POSTGRES_DSN,
// default postgres@127.0.0.1:5432/test).
func RequirePostgres(t testing.TB) *DB {
	t.Helper()
	d := Open(t, "postgres", "pgx", PostgresDSN(),
		"Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or set POSTGRES_DSN).")
	d.SetMaxOpenConns(40)
	return d
}

// RequireMariaDB returns the MariaDB test database (MARIADB_DSN, default
// root@127.0.0.1:3306/test).
func RequireMariaDB(t testing.TB) *DB {
	t.Helper()
	d := Open(t, "mysql", "mysql", MariaDBDSN(),
		"Start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` (or set MARIADB_DSN).")
	d.SetMaxOpenConns(40)
	return d
}

// OpenSQLite returns a SQLite database in a new file of t's temp dir.
func OpenSQLite(t testing.TB) *DB {
	t.Helper()
	return OpenSQLiteAt(t, filepath.Join(t.TempDir(), "outbox.db"))
}

// OpenSQLiteAt opens (creating) the SQLite database at path.
func OpenSQLiteAt(t testing.TB, path string) *DB {
	t.Helper()
	return Open(t, "sqlite", "sqlite", SQLiteDSN(path), "")
}

// All runs fn as a subtest for each database: "postgres", "mysql",
// "sqlite".
func All(t *testing.T, fn func(t *testing.T, db *DB)) {
	t.Helper()
	for _, c := range []struct {
		name string
		open func(testing.TB) *DB
	}{{"postgres", RequirePostgres}, {"mysql", RequireMariaDB}, {"sqlite", OpenSQLite}} {
		t.Run(c.name, func(t *testing.T) { fn(t, c.open(t)) })
	}
}

// dropTables drops the tables whose names start with the test's prefix.
func (d *DB) dropTables(t testing.TB) {
	if d.Kind == "sqlite" {
		return // the file goes with the temp dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()`
	if d.Kind == "mysql" {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()`
	}
	rows, err := d.QueryContext(ctx, q)
	if err != nil {
		t.Logf("dbtest: list tables: %v", err)
		return
	}
	var names []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil && strings.HasPrefix(n, d.Prefix) {
			names = append(names, n)
		}
	}
	_ = rows.Close()
	for _, n := range names {
		if _, err := d.ExecContext(ctx, "DROP TABLE IF EXISTS "+n); err != nil {
			t.Logf("dbtest: drop %s: %v", n, err)
		}
	}
}
