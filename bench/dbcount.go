package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// dbCounter counts what a process asks of its database, two ways:
//
//   - statements, by kind (the claim, the mark, the writer's insert, BEGIN,
//     COMMIT...): calls and client-side time, from the call until its rows
//     are closed, through a database/sql connector that wraps the driver's;
//   - round trips on the wire: a counting dialer sees every connection's
//     reads and writes, and a write that follows a read starts a new round
//     trip. This also sees what the driver does unasked: pgx's statement
//     preparation (Parse/Describe) the first time it meets a SQL text, its
//     liveness ping after a second idle, go-sql-driver/mysql's
//     prepare-execute-close for every statement with arguments (unless
//     interpolateParams=true) and its SET TRANSACTION ISOLATION LEVEL.
type dbCounter struct {
	mu      sync.Mutex
	kinds   map[string]*stmtStat
	samples map[string]string // the first SQL text of each kind

	turns, bytesOut, bytesIn atomic.Int64
}

type stmtStat struct {
	Calls int64
	Nanos int64
	Rows  int64 // rows returned (queries) or affected (execs)
}

func newDBCounter() *dbCounter {
	return &dbCounter{kinds: map[string]*stmtStat{}, samples: map[string]string{}}
}

// sample returns the first SQL text seen of kind.
func (c *dbCounter) sample(kind string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.samples[kind]
}

func (c *dbCounter) add(kind string, d time.Duration, rows int64) {
	c.addSQL(kind, "", d, rows)
}

func (c *dbCounter) addSQL(kind, query string, d time.Duration, rows int64) {
	c.mu.Lock()
	s := c.kinds[kind]
	if s == nil {
		s = &stmtStat{}
		c.kinds[kind] = s
		c.samples[kind] = query
	}
	s.Calls++
	s.Nanos += int64(d)
	s.Rows += rows
	c.mu.Unlock()
}

// dbSnapshot is a dbCounter's state at one moment.
type dbSnapshot struct {
	kinds                    map[string]stmtStat
	turns, bytesOut, bytesIn int64
}

func (c *dbCounter) snapshot() dbSnapshot {
	if c == nil {
		return dbSnapshot{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := dbSnapshot{kinds: make(map[string]stmtStat, len(c.kinds)), turns: c.turns.Load(), bytesOut: c.bytesOut.Load(), bytesIn: c.bytesIn.Load()}
	for k, v := range c.kinds {
		s.kinds[k] = *v
	}
	return s
}

// StmtCost is one statement kind's share of a window, per event.
type StmtCost struct {
	Kind        string  `json:"kind"`
	CallsPer    float64 `json:"calls_per_event"`
	MeanUs      float64 `json:"mean_us"`       // client-side, call to rows closed
	RowsPerCall float64 `json:"rows_per_call"` // returned or affected
}

// perEvent turns the difference between two snapshots into per-event
// figures: statements (every kind, BEGIN and COMMIT included) and round
// trips per event, and the kinds' breakdown.
func perEvent(before, after dbSnapshot, n int64) (stmts, turns float64, kinds []StmtCost) {
	if n <= 0 || after.kinds == nil {
		return 0, 0, nil
	}
	var total int64
	for k, a := range after.kinds {
		b := before.kinds[k]
		calls := a.Calls - b.Calls
		if calls == 0 {
			continue
		}
		total += calls
		kinds = append(kinds, StmtCost{Kind: k, CallsPer: float64(calls) / float64(n),
			MeanUs: float64(a.Nanos-b.Nanos) / 1e3 / float64(calls), RowsPerCall: float64(a.Rows-b.Rows) / float64(calls)})
	}
	slices.SortFunc(kinds, func(x, y StmtCost) int { return strings.Compare(x.Kind, y.Kind) })
	return float64(total) / float64(n), float64(after.turns-before.turns) / float64(n), kinds
}

// statementKinds names the statements of the outbox, the bench and
// Watermill's SQL adapter by what they contain; the first match wins.
var statementKinds = []struct{ kind, has string }{
	// outbox relay, PostgreSQL: the claim is one statement (the first two:
	// before the relay's changes of issue 21).
	{"claim-advance", "FROM (VALUES"},
	{"claim-full", "DISTINCT ON (msg_key)"},
	{"claim-advance", "FROM unnest("},
	{"claim-full", "AND p.seq < o.seq)"},
	// outbox relay, MySQL: heads, lock, lease in one transaction.
	{"heads-advance", "GROUP BY msg_key) h"}, // refined below: with "msg_key IN"
	{"proto-claim", "CROSS JOIN LATERAL (SELECT x."},
	{"proto-heads", "p.seq = o.seq - 1"},
	{"proto-runs", "FORCE INDEX"},
	{"proto-lease", "lease_owner = 'proto'"},
	{"lock", "FOR UPDATE SKIP LOCKED"},
	{"lease", "attempts = attempts + 1"},
	{"mark", "SET state = 1"},
	{"proto-verify", "AND (msg_key, seq) IN"},
	{"delete", "DELETE FROM "},
	{"retry", "SET next_attempt_at"},
	{"dead", "SET state = 2"},
	{"release", "SET lease_owner = NULL, lease_until = NULL WHERE state = 0 AND lease_owner"},
	{"backlog", "SELECT count(*), COALESCE("},
	// outbox writer
	{"writer-seq+insert", "WITH s AS ("},
	{"writer-seq", "LAST_INSERT_ID("},
	{"writer-seq", "RETURNING last_seq"},
	{"writer-insert", "(id, name, msg_key, seq, body"},
	{"order-insert", "orders (id)"},
	// Watermill SQL
	{"watermill-insert", "(uuid, payload, metadata"},
	{"watermill-select", "SELECT \"offset\""},
	{"watermill-select", "SELECT `offset`"},
	{"watermill-ack", "offsets_"},
	{"watermill-lock", "pg_advisory"},
}

func statementKind(q string) string {
	for _, k := range statementKinds {
		if strings.Contains(q, k.has) {
			if k.kind == "heads-advance" && !strings.Contains(q, "msg_key IN") {
				return "heads-full"
			}
			return k.kind
		}
	}
	f := strings.Fields(q)
	if len(f) > 3 {
		f = f[:3]
	}
	return "other: " + strings.Join(f, " ")
}

// openCounted opens a *sql.DB of driver ("pgx" or "mysql") on dsn whose
// statements and round trips c counts (a nil c: a plain *sql.DB).
func openCounted(driverName, dsn string, c *dbCounter) (*sql.DB, error) {
	if c == nil {
		return sql.Open(driverName, dsn)
	}
	var inner driver.Connector
	switch driverName {
	case "pgx":
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL DSN: %w", err)
		}
		dial := cfg.DialFunc
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingNetConn{Conn: conn, c: c}, nil
		}
		inner = stdlib.GetConnector(*cfg)
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("MySQL DSN: %w", err)
		}
		network, addr := cfg.Net, cfg.Addr
		cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingNetConn{Conn: conn, c: c}, nil
		}
		if inner, err = mysql.NewConnector(cfg); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("driver %q: want pgx or mysql", driverName)
	}
	return sql.OpenDB(countingConnector{inner: inner, c: c}), nil
}

// countingNetConn counts round trips: a write after a read begins one.
type countingNetConn struct {
	net.Conn
	c       *dbCounter
	writing atomic.Bool
}

func (n *countingNetConn) Write(b []byte) (int, error) {
	if !n.writing.Swap(true) {
		n.c.turns.Add(1)
	}
	w, err := n.Conn.Write(b)
	n.c.bytesOut.Add(int64(w))
	return w, err
}

func (n *countingNetConn) Read(b []byte) (int, error) {
	r, err := n.Conn.Read(b)
	if r > 0 {
		n.writing.Store(false)
		n.c.bytesIn.Add(int64(r))
	}
	return r, err
}

type countingConnector struct {
	inner driver.Connector
	c     *dbCounter
}

func (cc countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := cc.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{inner: conn, c: cc.c}, nil
}

func (cc countingConnector) Driver() driver.Driver { return cc.inner.Driver() }

// countingConn forwards to the driver's connection, timing each call.
type countingConn struct {
	inner driver.Conn
	c     *dbCounter
}

var errNoContext = errors.New("bench: the driver lacks a context-aware method")

func (cc *countingConn) Prepare(query string) (driver.Stmt, error) {
	return cc.PrepareContext(context.Background(), query)
}

func (cc *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	t0 := time.Now()
	var st driver.Stmt
	var err error
	if p, ok := cc.inner.(driver.ConnPrepareContext); ok {
		st, err = p.PrepareContext(ctx, query)
	} else {
		st, err = cc.inner.Prepare(query)
	}
	cc.c.add("prepare", time.Since(t0), 0)
	if err != nil {
		return nil, err
	}
	return &countingStmt{inner: st, c: cc.c, kind: statementKind(query), query: query}, nil
}

func (cc *countingConn) Close() error { return cc.inner.Close() }

func (cc *countingConn) Begin() (driver.Tx, error) {
	return cc.BeginTx(context.Background(), driver.TxOptions{})
}

func (cc *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	b, ok := cc.inner.(driver.ConnBeginTx)
	if !ok {
		return nil, errNoContext
	}
	t0 := time.Now()
	tx, err := b.BeginTx(ctx, opts)
	cc.c.add("begin", time.Since(t0), 0)
	if err != nil {
		return nil, err
	}
	return countingTx{inner: tx, c: cc.c}, nil
}

func (cc *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := cc.inner.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	t0 := time.Now()
	res, err := e.ExecContext(ctx, query, args)
	if errors.Is(err, driver.ErrSkip) {
		return nil, err // database/sql prepares it instead: counted there
	}
	var n int64
	if err == nil {
		n, _ = res.RowsAffected()
	}
	cc.c.addSQL(statementKind(query), query, time.Since(t0), n)
	return res, err
}

func (cc *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := cc.inner.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	t0 := time.Now()
	rows, err := q.QueryContext(ctx, query, args)
	if errors.Is(err, driver.ErrSkip) {
		return nil, err
	}
	if err != nil {
		cc.c.addSQL(statementKind(query), query, time.Since(t0), 0)
		return nil, err
	}
	return &countingRows{Rows: rows, c: cc.c, kind: statementKind(query), query: query, t0: t0}, nil
}

func (cc *countingConn) CheckNamedValue(v *driver.NamedValue) error {
	if ch, ok := cc.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (cc *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := cc.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (cc *countingConn) IsValid() bool {
	if v, ok := cc.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (cc *countingConn) Ping(ctx context.Context) error {
	if p, ok := cc.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

type countingTx struct {
	inner driver.Tx
	c     *dbCounter
}

func (t countingTx) Commit() error {
	t0 := time.Now()
	err := t.inner.Commit()
	t.c.add("commit", time.Since(t0), 0)
	return err
}

func (t countingTx) Rollback() error {
	t0 := time.Now()
	err := t.inner.Rollback()
	t.c.add("rollback", time.Since(t0), 0)
	return err
}

type countingStmt struct {
	inner driver.Stmt
	c     *dbCounter
	kind  string
	query string
}

func (s *countingStmt) Close() error  { return s.inner.Close() }
func (s *countingStmt) NumInput() int { return s.inner.NumInput() }

func (s *countingStmt) Exec(args []driver.Value) (driver.Result, error) {
	return nil, errNoContext // database/sql uses ExecContext when present
}

func (s *countingStmt) Query(args []driver.Value) (driver.Rows, error) {
	return nil, errNoContext
}

func (s *countingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	e, ok := s.inner.(driver.StmtExecContext)
	if !ok {
		return nil, errNoContext
	}
	t0 := time.Now()
	res, err := e.ExecContext(ctx, args)
	var n int64
	if err == nil {
		n, _ = res.RowsAffected()
	}
	s.c.addSQL(s.kind, s.query, time.Since(t0), n)
	return res, err
}

func (s *countingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := s.inner.(driver.StmtQueryContext)
	if !ok {
		return nil, errNoContext
	}
	t0 := time.Now()
	rows, err := q.QueryContext(ctx, args)
	if err != nil {
		s.c.addSQL(s.kind, s.query, time.Since(t0), 0)
		return nil, err
	}
	return &countingRows{Rows: rows, c: s.c, kind: s.kind, query: s.query, t0: t0}, nil
}

func (s *countingStmt) CheckNamedValue(v *driver.NamedValue) error {
	if ch, ok := s.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

// countingRows records its statement when closed: the client's time
// includes reading every row.
type countingRows struct {
	driver.Rows
	c     *dbCounter
	kind  string
	query string
	t0    time.Time
	n     int64
	done  bool
}

func (r *countingRows) Next(dest []driver.Value) error {
	err := r.Rows.Next(dest)
	if err == nil {
		r.n++
	}
	return err
}

func (r *countingRows) Close() error {
	err := r.Rows.Close()
	if !r.done {
		r.done = true
		r.c.addSQL(r.kind, r.query, time.Since(r.t0), r.n)
	}
	return err
}
