package outbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	"github.com/domainevents/domainevents/internal/backoff"
)

// Migrate creates the tables and indexes when they do not exist yet ([DDL]
// with the Store's table names), and adds to an existing outbox table the
// columns later versions added (deliver_at, for [WithDeliverAt]: nullable,
// so adding it rewrites no row). It is idempotent and changes nothing else
// that exists.
//
// It is safe to call from every process at start, all at once: the
// statements run under a lock of the database, one caller after the
// other (PostgreSQL: a transaction-scoped advisory lock,
// pg_advisory_xact_lock, with the DDL in that transaction; MySQL and
// MariaDB: GET_LOCK on one connection, released at the end; SQLite: the
// database's write lock, taken by BEGIN IMMEDIATE). Without it, two
// processes creating the same PostgreSQL table at once fail on the
// catalog's unique index. The lock is named after the outbox table, so
// stores of other tables do not wait for each other. ctx bounds the wait
// for the lock too.
func (s *Store) Migrate(ctx context.Context) error {
	stmts, err := ddl(s.dialect, s.tables)
	if err != nil {
		return invalid("migrate", err)
	}
	switch s.dialect {
	case Postgres:
		err = s.migratePostgres(ctx, stmts)
	case MySQL:
		err = s.migrateMySQL(ctx, stmts)
	case SQLite:
		err = s.migrateSQLite(ctx, stmts)
	}
	if err != nil {
		return dbErr("migrate", err)
	}
	return nil
}

// migrateLock names the migration lock of the Store's tables: a 64-bit
// number (PostgreSQL's advisory locks) and its hex form (MySQL's named
// locks, at most 64 characters).
func (s *Store) migrateLock() (int64, string) {
	h := fnv.New64a()
	h.Write([]byte("domainevents/outbox migrate " + s.tables.Outbox))
	n := h.Sum64()
	return int64(n), fmt.Sprintf("domainevents_migrate_%016x", n)
}

// migratePostgres runs the DDL in one transaction that first takes an
// advisory lock: concurrent callers wait for it, then find everything
// created. (PostgreSQL's DDL is transactional; the lock ends with the
// transaction, whatever happens to the connection.)
func (s *Store) migratePostgres(ctx context.Context, stmts []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	key, _ := s.migrateLock()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st); err != nil {
			return err
		}
	}
	if err := s.upgrade(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// migrateMySQL runs the DDL (each statement commits by itself in MySQL)
// on one connection holding a named lock. If releasing the lock fails,
// the connection is discarded, which releases it.
func (s *Store) migrateMySQL(ctx context.Context, stmts []string) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, name := s.migrateLock()
	// GET_LOCK's own timeout, in seconds: ctx's deadline, else an hour
	// (a cancelled ctx ends the wait sooner: the driver then closes the
	// connection).
	wait := 3600
	if d, ok := ctx.Deadline(); ok {
		wait = max(1, int(math.Ceil(time.Until(d).Seconds())))
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, wait).Scan(&got); err != nil {
		return fmt.Errorf("lock %s: %w", name, err)
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("lock %s: not granted within %ds", name, wait)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, rerr := conn.ExecContext(rctx, "SELECT RELEASE_LOCK(?)", name); rerr != nil {
			discard(conn)
		}
	}()
	for _, st := range stmts {
		if _, err := conn.ExecContext(ctx, st); err != nil {
			return err
		}
	}
	return s.upgrade(ctx, conn)
}

// migrateSQLite runs the DDL in one transaction that takes the database's
// write lock at once (BEGIN IMMEDIATE, whatever the connection's default
// transaction mode): a deferred transaction that first reads the schema
// could fail to upgrade its lock while another caller holds it. A caller
// finding the lock taken waits the connection's busy timeout; if it has
// none, Migrate tries again with backoff until ctx ends.
func (s *Store) migrateSQLite(ctx context.Context, stmts []string) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	policy := backoff.Policy{Initial: 10 * time.Millisecond, Max: 500 * time.Millisecond}
	for attempt := 1; ; attempt++ {
		_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
		if err == nil || !sqliteBusy(err) {
			break
		}
		t := time.NewTimer(policy.Delay(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("begin immediate: %w", err)
	}
	for _, st := range stmts {
		if _, err = conn.ExecContext(ctx, st); err != nil {
			break
		}
	}
	if err == nil {
		err = s.upgrade(ctx, conn)
	}
	if err == nil {
		if _, err = conn.ExecContext(ctx, "COMMIT"); err == nil {
			return nil
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, rerr := conn.ExecContext(rctx, "ROLLBACK"); rerr != nil {
		discard(conn) // never hand a connection inside a transaction back to the pool
	}
	return err
}

// sqliteBusy reports SQLite's "the database is locked" (SQLITE_BUSY), by
// its text: the library imports no driver.
func sqliteBusy(err error) bool {
	s := err.Error()
	return strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "database is locked")
}

// discard makes database/sql close conn instead of returning it to the
// pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}
