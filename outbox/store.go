package outbox

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
	"github.com/domainevents/domainevents/internal/reason"
)

// SchemaFiles holds the schema with the default table names as plain SQL,
// one file per dialect: sql/postgres.sql, sql/mysql.sql, sql/sqlite.sql.
// They are what [DDL] returns for [DefaultTables].
//
//go:embed sql/*.sql
var SchemaFiles embed.FS

// Store keeps messages in a database table inside the caller's transaction,
// for a [Relay] to publish once the transaction has committed. It
// implements broker.Broker, so a bridge.Forwarder publishes through it as
// through any adapter, and it gives the [Inbox] its table. Safe for
// concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	tables  Tables
	q       queries
	hook    func(context.Context, *broker.Message)
	txOpts  *sql.TxOptions
	maxSize int // WithMaxMessageSize

	scheduleSQL string // stores a scheduled message (schedule.go)

	closing lifecycle.Closing
	mu      sync.Mutex
	wakers  map[chan struct{}]struct{}
}

// Option configures [New]. Each option's doc names its default.
type Option func(*Store) error

// WithTables names the tables (empty fields keep their defaults). Default
// [DefaultTables]: domainevents_outbox, domainevents_outbox_keys,
// domainevents_inbox, domainevents_inbox_keys.
func WithTables(t Tables) Option {
	return func(s *Store) error {
		t = t.withDefaults()
		if err := t.validate(); err != nil {
			return fmt.Errorf("WithTables: %w", err)
		}
		s.tables = t
		return nil
	}
}

// WithMessageHook calls fn with each message before it is stored, so that
// it can add headers (the OpenTelemetry module injects the trace context
// here). fn gets a copy of the message it may change, and the ctx given to
// Publish. Default: none.
func WithMessageHook(fn func(ctx context.Context, m *broker.Message)) Option {
	return func(s *Store) error {
		if fn == nil {
			return errors.New("WithMessageHook: fn is nil")
		}
		s.hook = fn
		return nil
	}
}

// WithTxOptions sets the options of the transactions [Store.Transact] and
// the [Inbox] begin (isolation level, read-only). Default: nil, the
// driver's defaults.
func WithTxOptions(o *sql.TxOptions) Option {
	return func(s *Store) error {
		s.txOpts = o
		return nil
	}
}

// DefaultMaxMessageSize is the largest message a Store takes unless
// [WithMaxMessageSize] says otherwise: 16 MiB, the RabbitMQ adapter's
// default limit.
const DefaultMaxMessageSize = 16 << 20

// WithMaxMessageSize makes [Store.Publish] refuse, inside the caller's
// transaction, a message larger than n bytes: one the broker would refuse
// for good, so that it fails the writer's transaction instead of
// committing and then dying in the relay. A message's size here is its
// body plus its headers (names and values), ID, Name, Key and
// ContentType: a little more than RabbitMQ counts (the body only), about
// what Kafka counts for a record (the adapter adds three headers and
// some framing: leave 1 KiB for them). Set it to the limit of the broker
// your relays publish to: domainevents.MaxMessageSize(cfg) is the
// configured broker's default (RabbitMQ 16 MiB, Kafka 1 MiB less 1 KiB).
// Default [DefaultMaxMessageSize].
func WithMaxMessageSize(n int) Option {
	return func(s *Store) error {
		if n < 1 {
			return fmt.Errorf("WithMaxMessageSize(%d): must be positive", n)
		}
		s.maxSize = n
		return nil
	}
}

// New returns a Store keeping messages in db, a database of dialect d. It
// does not touch the database: call [Store.Migrate] (or apply [DDL]
// yourself) before the first Publish. A nil db, an unknown dialect or a bad
// option is an error matching broker.ErrInvalid that names it.
func New(db *sql.DB, d Dialect, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, invalid("options", errors.New("New: db is nil"))
	}
	if _, err := ddl(d, Tables{}); err != nil {
		return nil, invalid("options", fmt.Errorf("New: %w", err))
	}
	s := &Store{db: db, dialect: d, tables: DefaultTables, maxSize: DefaultMaxMessageSize, wakers: map[chan struct{}]struct{}{}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return nil, invalid("options", err)
		}
	}
	if _, err := ddl(d, s.tables); err != nil {
		return nil, invalid("options", fmt.Errorf("WithTables: %w", err))
	}
	s.q = newQueries(d, s.tables)
	s.scheduleSQL = newScheduleSQL(d, s.tables, s.q.now)
	return s, nil
}

// DB returns the database the Store was made with.
func (s *Store) DB() *sql.DB { return s.db }

// Dialect returns the Store's dialect.
func (s *Store) Dialect() Dialect { return s.dialect }

// Tables returns the table names in use.
func (s *Store) Tables() Tables { return s.tables }

// MaxMessageSize returns the largest message Publish takes
// ([WithMaxMessageSize]).
func (s *Store) MaxMessageSize() int { return s.maxSize }

type txKey struct{}

// WithTx returns a ctx carrying tx: [Store.Publish] called with it (or with
// a ctx derived from it) stores the message in tx. [Store.Transact] and the
// [Inbox] do this for you.
func WithTx(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFrom returns the transaction ctx carries: inside [Store.Transact]'s
// function, or in a handler wrapped by [Inbox.Handler], the transaction to
// write your own rows in.
func TxFrom(ctx context.Context) (*sql.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(*sql.Tx)
	return tx, ok && tx != nil
}

// Publish stores msg in the transaction ctx carries ([WithTx],
// [Store.Transact]); it is published by a [Relay] once that transaction
// commits, and never if it rolls back. Publish returns nil once the row is
// written in the transaction: durable when the commit succeeds.
//
// The message gets the next sequence number of its Key (the aggregate
// id): a counter row per key, locked until the transaction ends, so that
// the relay publishes a key's messages in the order their transactions
// committed. A message scheduled by ctx ([WithDeliverAt]) gets none: it
// is published at its time, outside its key's order. Two transactions storing messages of the same key therefore
// take turns; transactions that lock several keys in different orders can
// deadlock like any two transactions updating the same rows (the database
// aborts one).
//
// Call it while the transaction is open: behind a synchronous
// bridge.Forwarder (the default), not one made with bridge.WithAsync.
//
// Publish refuses what no relay could ever publish, so that the caller's
// transaction fails instead of committing an event that would die later:
// a message over the size limit ([WithMaxMessageSize]) is an error
// matching broker.ErrTooLarge; no transaction in ctx, an empty ID, Name or
// Key, or an ID, Name, Key, ContentType or header name longer than 255
// bytes is an error matching broker.ErrInvalid that says which (nothing is
// ever published outside a transaction). Return the error from the
// transaction's function and nothing commits.
//
// Other errors: after [Store.Close], broker.ErrClosed; a database error
// (duplicate id, connection lost, transaction aborted) matches
// [ErrDatabase] and broker.ErrUnavailable and carries the driver's error.
// A ctx that is already done returns ctx.Err(). The transaction is yours:
// Publish never commits or rolls it back.
func (s *Store) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closing.Begun() {
		return &broker.Error{Op: "outbox: publish", Kind: broker.ErrClosed}
	}
	tx, ok := TxFrom(ctx)
	if !ok {
		return invalid("publish", fmt.Errorf("message %s: no transaction in ctx: publish inside Store.Transact, or put your *sql.Tx in ctx with outbox.WithTx", msg.ID))
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	if s.hook != nil {
		msg = msg.Clone()
		s.hook(ctx, &msg)
	}
	if err := s.check(msg); err != nil {
		return err
	}
	if due, ok := DeliverAtFrom(ctx); ok {
		return s.publishScheduled(ctx, tx, msg, due)
	}
	var headers any // NULL when there are none
	if len(msg.Headers) > 0 {
		h, err := json.Marshal(msg.Headers)
		if err != nil {
			return invalid("publish", fmt.Errorf("message %s: headers: %w", msg.ID, err))
		}
		headers = string(h)
	}
	at := msg.Time
	if at.IsZero() {
		at = time.Now()
	}
	body := msg.Body
	if body == nil {
		body = []byte{} // NOT NULL
	}
	var err error
	switch s.dialect {
	case Postgres:
		_, err = tx.ExecContext(ctx, s.q.insert, msg.Key, msg.ID, msg.Name, msg.Key, body, msg.ContentType, headers, s.timeArg(at))
	case MySQL:
		var res sql.Result
		if res, err = tx.ExecContext(ctx, s.q.nextSeq, msg.Key); err == nil {
			var seq int64
			if seq, err = res.LastInsertId(); err == nil {
				_, err = tx.ExecContext(ctx, s.q.insert, msg.ID, msg.Name, msg.Key, seq, body, msg.ContentType, headers, s.timeArg(at))
			}
		}
	case SQLite:
		var seq int64
		if err = tx.QueryRowContext(ctx, s.q.nextSeq, msg.Key).Scan(&seq); err == nil {
			_, err = tx.ExecContext(ctx, s.q.insert, msg.ID, msg.Name, msg.Key, seq, body, msg.ContentType, headers, s.timeArg(at))
		}
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
		return dbErr("publish", fmt.Errorf("message %s %s: %w", msg.Name, msg.ID, err))
	}
	return nil
}

// maxField is the longest ID, Name, Key, ContentType and header name a
// Store takes, in bytes: an AMQP short string (RabbitMQ's routing key,
// message id, type, content type and header names), and the MySQL
// schema's VARCHAR(255).
const maxField = 255

// check refuses what no relay could ever publish: an empty Key, a field
// longer than maxField, a message over the size limit. It runs before
// anything is written, so that the caller's transaction fails instead of
// committing a message that would die in the relay.
func (s *Store) check(msg broker.Message) error {
	if msg.Key == "" {
		return invalid("publish", fmt.Errorf("message %s: Key is empty: the outbox orders messages per aggregate key", msg.ID))
	}
	if err := checkScheduledKey(msg); err != nil {
		return err
	}
	size := len(msg.Body) + len(msg.ID) + len(msg.Name) + len(msg.Key) + len(msg.ContentType)
	for _, f := range []struct{ name, v string }{{"ID", msg.ID}, {"Name", msg.Name}, {"Key", msg.Key}, {"ContentType", msg.ContentType}} {
		if len(f.v) > maxField {
			return invalid("publish", fmt.Errorf("message %.64s: %s is %d bytes, at most %d are allowed", msg.ID, f.name, len(f.v), maxField))
		}
	}
	for k, v := range msg.Headers {
		if len(k) > maxField {
			return invalid("publish", fmt.Errorf("message %s: header name %.32q... is %d bytes, at most %d are allowed", msg.ID, k, len(k), maxField))
		}
		size += len(k) + len(v)
	}
	if size > s.maxSize {
		return &broker.Error{Op: "outbox: publish", Kind: broker.ErrTooLarge,
			Err: fmt.Errorf("message %s (%s) is %d bytes, the limit is %d (WithMaxMessageSize): the broker would never take it", msg.ID, msg.Name, size, s.maxSize)}
	}
	return nil
}

// timeArg is t as the dialect's time columns take it: TIMESTAMPTZ,
// DATETIME(6) text in UTC, or SQLite's integer microseconds.
func (s *Store) timeArg(t time.Time) any {
	switch s.dialect {
	case MySQL:
		return t.UTC().Format(mysqlTime)
	case SQLite:
		return t.UnixMicro()
	}
	return t.UTC()
}

// mysqlTime is how times are written to and read from DATETIME(6) columns,
// in UTC whatever the driver's loc and parseTime settings.
const mysqlTime = "2006-01-02 15:04:05.000000"

// errTxPanic is the kind of the error Transact makes of fn's panic.
var errTxPanic = errors.New("outbox: transaction function panicked")

// Transact runs fn in a new transaction whose ctx carries it (so that
// [Store.Publish], and eventbus.Publish through a bridge.Forwarder, store
// into it), commits when fn returns nil and rolls back when fn returns an
// error or panics (the panic becomes the returned error: one line naming
// the value and the frame that panicked, with the stack kept by its
// PanicStack method, which a subscriber's handler call logs once).
// After a successful commit it wakes the relays of this process
// ([Store.Notify]). Write your own rows with tx: they commit or roll back
// together with the messages.
//
// An error from Commit is returned as it is: as with any commit that
// fails, the outcome may be unknown to the database client.
func (s *Store) Transact(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) (err error) {
	if s.closing.Begun() {
		return &broker.Error{Op: "outbox: transact", Kind: broker.ErrClosed}
	}
	tx, err := s.db.BeginTx(ctx, s.txOpts)
	if err != nil {
		return dbErr("begin", err)
	}
	done := false
	defer func() {
		if r := recover(); r != nil {
			err = reason.NewPanic(errTxPanic, r)
		}
		if !done {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("outbox: rollback: %w", rerr))
			}
		}
	}()
	if err := fn(WithTx(ctx, tx), tx); err != nil {
		return err
	}
	done = true
	if err := tx.Commit(); err != nil {
		return dbErr("commit", err)
	}
	s.Notify()
	return nil
}

// Notify wakes the relays of this process working on this Store, so that
// they claim at once what was just committed instead of at their next
// poll. Call it after committing a transaction of your own that stored
// messages ([Store.Transact] calls it for you). It never blocks.
func (s *Store) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.wakers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Store) addWaker(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakers[ch] = struct{}{}
}

func (s *Store) removeWaker(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.wakers, ch)
}

// Close makes later Publish and Transact calls fail with broker.ErrClosed.
// It does not close the *sql.DB (it is yours) nor the relays. A second
// Close returns nil.
func (s *Store) Close(context.Context) error {
	s.closing.Begin()
	return nil
}

// Backlog returns how many rows wait to be published (pending, including
// those backing off) and the age of the oldest of them by the database's
// clock (0 when none). A scheduled row ([WithDeliverAt]) waits from its
// deliver-at time on: before it, it is not counted.
func (s *Store) Backlog(ctx context.Context) (rows int64, lag time.Duration, err error) {
	var secs sql.NullFloat64
	if err := s.db.QueryRowContext(ctx, s.q.backlog).Scan(&rows, &secs); err != nil {
		return 0, 0, dbErr("backlog", err)
	}
	return rows, time.Duration(secs.Float64 * float64(time.Second)), nil
}

// Prune deletes rows published more than olderThan ago (by the database's
// clock), batch rows per statement until none is left, then the counter
// rows of keys that have no row left. Pending and dead rows are never
// deleted. It returns how many outbox rows it deleted. A [Relay] calls it
// every minute with its retention ([WithRetention]); call it yourself if
// you run no relay with retention. batch <= 0 means 1000.
func (s *Store) Prune(ctx context.Context, olderThan time.Duration, batch int) (int64, error) {
	if batch <= 0 {
		batch = 1000
	}
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, s.q.prune, -olderThan.Microseconds(), batch)
		if err != nil {
			return total, dbErr("prune", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < int64(batch) {
			break
		}
	}
	if total > 0 {
		if err := s.pruneKeys(ctx, batch); err != nil {
			return total, err
		}
	}
	return total, nil
}

// pruneKeys deletes counter rows of keys with no outbox row left, at most
// batch per call (the rest go on the next call).
func (s *Store) pruneKeys(ctx context.Context, batch int) error {
	k, o := s.tables.Keys, s.tables.Outbox
	rows, err := s.db.QueryContext(ctx, s.q.rebind(`SELECT k.msg_key, k.last_seq FROM `+k+` k
WHERE NOT EXISTS (SELECT 1 FROM `+o+` o WHERE o.msg_key = k.msg_key) LIMIT ?`), batch)
	if err != nil {
		return dbErr("prune", err)
	}
	type key struct {
		k   string
		seq int64
	}
	var keys []key
	for rows.Next() {
		var c key
		if err := rows.Scan(&c.k, &c.seq); err != nil {
			rows.Close()
			return dbErr("prune", err)
		}
		keys = append(keys, c)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return dbErr("prune", err)
	}
	for _, c := range keys {
		if _, err := s.db.ExecContext(ctx, s.q.pruneKeys, c.k, c.seq, c.k); err != nil {
			return dbErr("prune", err)
		}
	}
	return nil
}

// invalid is a bad argument or option: it matches broker.ErrInvalid.
func invalid(op string, err error) error {
	return &broker.Error{Op: "outbox: " + op, Kind: broker.ErrInvalid, Err: err}
}
