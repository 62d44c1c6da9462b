package outbox

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Dialect names the SQL database the tables live in. The Store speaks
// database/sql only: open the *sql.DB with any driver for that database.
type Dialect string

// The supported dialects.
const (
	// Postgres is PostgreSQL 12 or newer (FOR UPDATE SKIP LOCKED, partial
	// indexes, INSERT ... ON CONFLICT ... RETURNING).
	Postgres Dialect = "postgres"
	// MySQL is MariaDB 10.6 or newer or MySQL 8.0 or newer (FOR UPDATE SKIP
	// LOCKED). The relay claims at READ COMMITTED.
	MySQL Dialect = "mysql"
	// SQLite is SQLite 3.42 or newer (RETURNING, unixepoch('subsec')). It
	// has no row locks: every write holds the database's one write lock,
	// so relays take turns (each claim is one atomic statement) and one
	// relay at a time does the work. Times are stored as integer unix
	// microseconds.
	SQLite Dialect = "sqlite"
)

// Tables names the tables. An empty field takes its default.
type Tables struct {
	// Outbox holds one row per stored message. Default "domainevents_outbox".
	Outbox string
	// Keys holds the per-key sequence counters. Default
	// "domainevents_outbox_keys".
	Keys string
	// Inbox holds (consumer, event id) of handled deliveries. Default
	// "domainevents_inbox".
	Inbox string
	// InboxKeys holds, per consumer and key, the sequence number of the
	// key's last event the [Inbox] applied. Default Inbox + "_keys"
	// ("domainevents_inbox_keys").
	InboxKeys string
}

// DefaultTables are the names used when [WithTables] is not given.
var DefaultTables = Tables{Outbox: "domainevents_outbox", Keys: "domainevents_outbox_keys", Inbox: "domainevents_inbox",
	InboxKeys: "domainevents_inbox_keys"}

// identifier is a table name: letters, digits and underscores, optionally
// schema-qualified; never quoted, so it is safe to paste into SQL.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}(\.[A-Za-z_][A-Za-z0-9_]{0,47})?$`)

func (t Tables) withDefaults() Tables {
	if t.Outbox == "" {
		t.Outbox = DefaultTables.Outbox
	}
	if t.Keys == "" {
		t.Keys = DefaultTables.Keys
	}
	if t.Inbox == "" {
		t.Inbox = DefaultTables.Inbox
	}
	if t.InboxKeys == "" {
		t.InboxKeys = t.Inbox + "_keys"
	}
	return t
}

func (t Tables) validate() error {
	var bad []string
	names := []struct{ field, name string }{{"Outbox", t.Outbox}, {"Keys", t.Keys}, {"Inbox", t.Inbox}, {"InboxKeys", t.InboxKeys}}
	seen := map[string]bool{}
	for _, f := range names {
		if !identifier.MatchString(f.name) {
			bad = append(bad, fmt.Sprintf("Tables.%s %q: want letters, digits and underscores (at most 48, optionally schema.table)", f.field, f.name))
		}
		seen[f.name] = true
	}
	if len(seen) < len(names) {
		bad = append(bad, fmt.Sprintf("Tables %q, %q, %q, %q: the names must differ", t.Outbox, t.Keys, t.Inbox, t.InboxKeys))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// indexName is the name of an index of table: the unqualified table name
// plus suffix.
func indexName(table, suffix string) string {
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		table = table[i+1:]
	}
	return table + "_" + suffix
}

// Row states. A row is pending until it is published or dead; only the
// pending row with the lowest seq of its key (the head) can be claimed.
const (
	statePending   = 0
	statePublished = 1
	stateDead      = 2
)

// DDL returns the schema for d with the tables t (empty fields take their
// defaults): CREATE TABLE / CREATE INDEX statements, each ending with ";"
// on its own line, all of them idempotent (IF NOT EXISTS). It is what
// [Store.Migrate] runs; with [DefaultTables] it is the file
// sql/<dialect>.sql of [SchemaFiles]. Hand it to your migration tool if
// you prefer. An unknown dialect or a bad table name is an error that says
// so.
func DDL(d Dialect, t Tables) (string, error) {
	stmts, err := ddl(d, t)
	if err != nil {
		return "", err
	}
	return strings.Join(stmts, ";\n\n") + ";\n", nil
}

func ddl(d Dialect, t Tables) ([]string, error) {
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return nil, err
	}
	o, k, in, ik := t.Outbox, t.Keys, t.Inbox, t.InboxKeys
	if d == SQLite && strings.Contains(o+k+in+ik, ".") {
		return nil, fmt.Errorf("Tables %q, %q, %q, %q: SQLite wants unqualified names (its CREATE INDEX cannot name a schema's table)", o, k, in, ik)
	}
	switch d {
	case Postgres:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + o + ` (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY, -- event id, the consumers' idempotency key
    name            TEXT        NOT NULL,               -- event name: routing key / header
    msg_key         TEXT COLLATE "C" NOT NULL,          -- aggregate id: order is kept per key; byte order
    seq             BIGINT      NOT NULL,               -- per-key sequence: 1, 2, 3... in commit order
    body            BYTEA       NOT NULL,
    content_type    TEXT        NOT NULL DEFAULT '',
    headers         TEXT,                               -- JSON object of string headers (trace context)
    occurred_at     TIMESTAMPTZ NOT NULL,               -- the message's Time
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    state           SMALLINT    NOT NULL DEFAULT 0,     -- 0 pending, 1 published, 2 dead
    attempts        INTEGER     NOT NULL DEFAULT 0,     -- claims so far
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner     TEXT,                               -- relay holding the row
    lease_until     TIMESTAMPTZ,
    published_at    TIMESTAMPTZ,
    dead_at         TIMESTAMPTZ,
    last_error      TEXT,
    deliver_at      TIMESTAMPTZ,                        -- WithDeliverAt: not published before; NULL: at once
    CONSTRAINT ` + indexName(o, "key_seq") + ` UNIQUE (msg_key, seq)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "due") + ` ON ` + o + ` (next_attempt_at) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "head") + ` ON ` + o + ` (msg_key, seq) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "published") + ` ON ` + o + ` (published_at) WHERE state = 1`,
			`CREATE TABLE IF NOT EXISTS ` + k + ` (
    msg_key  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL                            -- seq of the key's last stored message
)`,
			`CREATE TABLE IF NOT EXISTS ` + in + ` (
    consumer     TEXT COLLATE "C" NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(in, "processed") + ` ON ` + in + ` (processed_at)`,
			`CREATE TABLE IF NOT EXISTS ` + ik + ` (
    consumer   TEXT COLLATE "C" NOT NULL,
    msg_key    TEXT COLLATE "C" NOT NULL,
    last_seq   BIGINT      NOT NULL,                    -- seq of the key's last event applied (or skipped)
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, msg_key)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(ik, "updated") + ` ON ` + ik + ` (updated_at)`,
		}, nil
	case MySQL:
		// utf8mb4_bin: ids and keys compare byte for byte ("A" is not "a").
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + o + ` (
    id              VARCHAR(255) NOT NULL,              -- event id, the consumers' idempotency key
    name            VARCHAR(255) NOT NULL,              -- event name: routing key / header
    msg_key         VARCHAR(255) NOT NULL,              -- aggregate id: order is kept per key
    seq             BIGINT       NOT NULL,              -- per-key sequence: 1, 2, 3... in commit order
    body            LONGBLOB     NOT NULL,
    content_type    VARCHAR(255) NOT NULL DEFAULT '',
    headers         TEXT         NULL,                  -- JSON object of string headers (trace context)
    occurred_at     DATETIME(6)  NOT NULL,              -- the message's Time, UTC
    created_at      DATETIME(6)  NOT NULL,              -- UTC, as every time below
    state           SMALLINT     NOT NULL DEFAULT 0,    -- 0 pending, 1 published, 2 dead
    attempts        INT          NOT NULL DEFAULT 0,    -- claims so far
    next_attempt_at DATETIME(6)  NOT NULL,
    lease_owner     VARCHAR(64)  NULL,                  -- relay holding the row
    lease_until     DATETIME(6)  NULL,
    published_at    DATETIME(6)  NULL,
    dead_at         DATETIME(6)  NULL,
    last_error      TEXT         NULL,
    deliver_at      DATETIME(6)  NULL,                  -- WithDeliverAt: not published before; NULL: at once
    PRIMARY KEY (id),
    UNIQUE KEY ` + indexName(o, "key_seq") + ` (msg_key, seq),
    KEY ` + indexName(o, "due") + ` (state, next_attempt_at),
    KEY ` + indexName(o, "head") + ` (state, msg_key, seq),
    KEY ` + indexName(o, "published") + ` (state, published_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
			`CREATE TABLE IF NOT EXISTS ` + k + ` (
    msg_key  VARCHAR(255) NOT NULL PRIMARY KEY,
    last_seq BIGINT       NOT NULL                      -- seq of the key's last stored message
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
			`CREATE TABLE IF NOT EXISTS ` + in + ` (
    consumer     VARCHAR(255) NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    processed_at DATETIME(6)  NOT NULL,                 -- UTC
    PRIMARY KEY (consumer, event_id),
    KEY ` + indexName(in, "processed") + ` (processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
			`CREATE TABLE IF NOT EXISTS ` + ik + ` (
    consumer   VARCHAR(255) NOT NULL,
    msg_key    VARCHAR(255) NOT NULL,
    last_seq   BIGINT       NOT NULL,                   -- seq of the key's last event applied (or skipped)
    updated_at DATETIME(6)  NOT NULL,                   -- UTC
    PRIMARY KEY (consumer, msg_key),
    KEY ` + indexName(ik, "updated") + ` (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}, nil
	case SQLite:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + o + ` (
    id              TEXT    NOT NULL PRIMARY KEY,       -- event id, the consumers' idempotency key
    name            TEXT    NOT NULL,                   -- event name: routing key / header
    msg_key         TEXT    NOT NULL,                   -- aggregate id: order is kept per key
    seq             INTEGER NOT NULL,                   -- per-key sequence: 1, 2, 3... in commit order
    body            BLOB    NOT NULL,
    content_type    TEXT    NOT NULL DEFAULT '',
    headers         TEXT,                               -- JSON object of string headers (trace context)
    occurred_at     INTEGER NOT NULL,                   -- the message's Time; all times: unix microseconds
    created_at      INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,         -- 0 pending, 1 published, 2 dead
    attempts        INTEGER NOT NULL DEFAULT 0,         -- claims so far
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,                               -- relay holding the row
    lease_until     INTEGER,
    published_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT,
    deliver_at      INTEGER,                            -- WithDeliverAt: not published before; NULL: at once
    UNIQUE (msg_key, seq)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "due") + ` ON ` + o + ` (next_attempt_at) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "head") + ` ON ` + o + ` (msg_key, seq) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "published") + ` ON ` + o + ` (published_at) WHERE state = 1`,
			`CREATE TABLE IF NOT EXISTS ` + k + ` (
    msg_key  TEXT    NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL                           -- seq of the key's last stored message
)`,
			`CREATE TABLE IF NOT EXISTS ` + in + ` (
    consumer     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,                      -- unix microseconds
    PRIMARY KEY (consumer, event_id)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(in, "processed") + ` ON ` + in + ` (processed_at)`,
			`CREATE TABLE IF NOT EXISTS ` + ik + ` (
    consumer   TEXT    NOT NULL,
    msg_key    TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL,                        -- seq of the key's last event applied (or skipped)
    updated_at INTEGER NOT NULL,                        -- unix microseconds
    PRIMARY KEY (consumer, msg_key)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(ik, "updated") + ` ON ` + ik + ` (updated_at)`,
		}, nil
	default:
		return nil, fmt.Errorf("dialect %q: want outbox.Postgres, outbox.MySQL or outbox.SQLite", string(d))
	}
}

// queries are the statements of one Store, with its table names, written
// with "?" placeholders (rebound to $n for PostgreSQL). The time
// expressions use the database's clock, so that leases mean the same to
// every relay whatever its host's clock says.
type queries struct {
	d      Dialect
	outbox string
	// now is the current time; plus(p) is now plus p microseconds.
	now  string
	plus func(p string) string

	// insert stores one message; for PostgreSQL it also takes the seq.
	nextSeq, insert string
	// cols are the columns a claim returns (colsOf for another name of
	// the row); due is the condition a row must meet (on its latest
	// version) to be claimed.
	cols, due string
	colsOf    func(alias string) string
	// markPublished needs the id list appended (PostgreSQL: one text[]
	// argument, "= ANY(...)" already there); markRetry, markDead one row.
	markPublished, markRetry, markDead, release string
	prune, pruneKeys, backlog                   string
	inboxInsert, inboxCleanup                   string
	// The inbox's per-key sequence (see inbox_order.go): inboxKeyEnsure
	// (MySQL) creates a key's row at 0; inboxKeyLock locks it and returns
	// last_seq (PostgreSQL, SQLite: creating it); inboxKeyAdvance sets it.
	inboxKeyEnsure, inboxKeyLock, inboxKeyAdvance string
	inboxKeyGet, inboxKeyCleanup                  string

	// dueNow makes every pending row backing off due at once (the broker
	// is back).
	dueNow string
}

func newQueries(d Dialect, t Tables) queries {
	q := queries{d: d, outbox: t.Outbox}
	o, k := t.Outbox, t.Keys
	switch d {
	case Postgres:
		q.now = "now()"
		q.plus = func(p string) string { return "now() + " + p + "::float8 * interval '1 microsecond'" }
	case MySQL:
		q.now = "UTC_TIMESTAMP(6)"
		q.plus = func(p string) string { return "UTC_TIMESTAMP(6) + INTERVAL " + p + " MICROSECOND" }
	case SQLite:
		q.now = "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"
		q.plus = func(p string) string { return "(" + q.now + " + " + p + ")" }
	}
	now := q.now

	// The columns a claim returns, in the order queryRows reads them, of
	// the row named a; more: whether a later row of the key exists (a hint
	// for advancing).
	q.colsOf = func(a string) string {
		at := a + ".occurred_at"
		if d == MySQL {
			at = "DATE_FORMAT(" + at + ", '%Y-%m-%d %H:%i:%s.%f')" // a string whatever the driver's parseTime
		}
		return a + ".id, " + a + ".name, " + a + ".msg_key, " + a + ".seq, " + a + ".body, " + a + ".content_type, " +
			a + ".headers, " + at + ", " + a + ".attempts, EXISTS (SELECT 1 FROM " + o + " m WHERE m.msg_key = " + a +
			".msg_key AND m.seq > " + a + ".seq)"
	}
	q.cols = q.colsOf("o")
	q.due = `o.state = 0 AND o.next_attempt_at <= ` + now + ` AND (o.lease_until IS NULL OR o.lease_until <= ` + now + `)`

	switch d {
	case Postgres:
		q.insert = `WITH s AS (
  INSERT INTO ` + k + ` AS k (msg_key, last_seq) VALUES (?, 1)
  ON CONFLICT (msg_key) DO UPDATE SET last_seq = k.last_seq + 1
  RETURNING last_seq)
INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
SELECT ?, ?, ?, s.last_seq, ?, ?, ?, ?, now(), now() FROM s`
	case MySQL:
		q.nextSeq = `INSERT INTO ` + k + ` (msg_key, last_seq) VALUES (?, LAST_INSERT_ID(1))
ON DUPLICATE KEY UPDATE last_seq = LAST_INSERT_ID(last_seq + 1)`
		q.insert = `INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`
	case SQLite:
		q.nextSeq = `INSERT INTO ` + k + ` (msg_key, last_seq) VALUES (?, 1)
ON CONFLICT (msg_key) DO UPDATE SET last_seq = last_seq + 1
RETURNING last_seq`
		q.insert = `INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ` + now + `, ` + now + `)`
	}

	q.markPublished = `UPDATE ` + o + ` SET state = 1, published_at = ` + now + `, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id IN `
	if d == Postgres {
		// One statement text for every batch size: pgx prepares each new
		// text once per connection (a round trip, and a place in its
		// statement cache).
		q.markPublished = strings.TrimSuffix(q.markPublished, " IN ") + ` = ANY(?::text[])`
	}
	q.markRetry = `UPDATE ` + o + ` SET next_attempt_at = ` + q.plus("?") + `, last_error = ?, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id = ?`
	q.markDead = `UPDATE ` + o + ` SET state = 2, dead_at = ` + now + `, last_error = ?, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id = ?`
	q.release = `UPDATE ` + o + ` SET lease_owner = NULL, lease_until = NULL WHERE state = 0 AND lease_owner = ?`
	q.dueNow = `UPDATE ` + o + ` SET next_attempt_at = ` + now + ` WHERE state = 0 AND next_attempt_at > ` + now +
		` AND (deliver_at IS NULL OR deliver_at <= ` + now + `)` // a scheduled row keeps its time

	older := q.plus("?") // now - retention: the parameter is negative
	// The backlog leaves out scheduled rows before their time, and counts
	// a scheduled row's lag from it.
	notScheduled := ` AND (deliver_at IS NULL OR deliver_at <= ` + now + `)`
	switch d {
	case Postgres:
		q.prune = `DELETE FROM ` + o + ` WHERE id IN (SELECT id FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?)`
		q.backlog = `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(deliver_at, created_at))), 0)::float8 FROM ` + o + ` WHERE state = 0` + notScheduled
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, now()) ON CONFLICT DO NOTHING`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?)`
		q.inboxKeyLock = `INSERT INTO ` + t.InboxKeys + ` AS k (consumer, msg_key, last_seq, updated_at) VALUES (?, ?, 0, now())
ON CONFLICT (consumer, msg_key) DO UPDATE SET last_seq = k.last_seq RETURNING last_seq`
		q.inboxKeyCleanup = `DELETE FROM ` + t.InboxKeys + ` WHERE (consumer, msg_key) IN (SELECT consumer, msg_key FROM ` + t.InboxKeys + ` WHERE updated_at < ` + older + ` LIMIT ?)`
	case MySQL:
		q.prune = `DELETE FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?`
		q.backlog = `SELECT count(*), COALESCE(TIMESTAMPDIFF(MICROSECOND, min(COALESCE(deliver_at, created_at)), UTC_TIMESTAMP(6)) / 1000000, 0) FROM ` + o + ` WHERE state = 0` + notScheduled
		// ON DUPLICATE KEY UPDATE, not INSERT IGNORE: IGNORE would also
		// turn a too-long id into a silently truncated one.
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE event_id = event_id`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?`
		q.inboxKeyEnsure = `INSERT INTO ` + t.InboxKeys + ` (consumer, msg_key, last_seq, updated_at) VALUES (?, ?, 0, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE last_seq = last_seq`
		q.inboxKeyLock = `SELECT last_seq FROM ` + t.InboxKeys + ` WHERE consumer = ? AND msg_key = ? FOR UPDATE`
		q.inboxKeyCleanup = `DELETE FROM ` + t.InboxKeys + ` WHERE updated_at < ` + older + ` LIMIT ?`
	case SQLite:
		q.prune = `DELETE FROM ` + o + ` WHERE rowid IN (SELECT rowid FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?)`
		q.backlog = `SELECT count(*), COALESCE((` + now + ` - min(COALESCE(deliver_at, created_at))) / 1000000.0, 0) FROM ` + o + ` WHERE state = 0` + notScheduled
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, ` + now + `) ON CONFLICT DO NOTHING`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE rowid IN (SELECT rowid FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?)`
		q.inboxKeyLock = `INSERT INTO ` + t.InboxKeys + ` (consumer, msg_key, last_seq, updated_at) VALUES (?, ?, 0, ` + now + `)
ON CONFLICT (consumer, msg_key) DO UPDATE SET last_seq = last_seq RETURNING last_seq`
		q.inboxKeyCleanup = `DELETE FROM ` + t.InboxKeys + ` WHERE rowid IN (SELECT rowid FROM ` + t.InboxKeys + ` WHERE updated_at < ` + older + ` LIMIT ?)`
	}
	q.inboxKeyAdvance = `UPDATE ` + t.InboxKeys + ` SET last_seq = ?, updated_at = ` + now + ` WHERE consumer = ? AND msg_key = ?`
	q.inboxKeyGet = `SELECT last_seq FROM ` + t.InboxKeys + ` WHERE consumer = ? AND msg_key = ?`
	// A key's counter row goes once no row of the key is left, and only if
	// no writer moved it meanwhile (last_seq is re-read under the row lock,
	// so a writer that bumped it keeps it): a new row must never restart at
	// seq 1 while an older row of its key exists.
	q.pruneKeys = `DELETE FROM ` + k + ` WHERE msg_key = ? AND last_seq = ? AND NOT EXISTS (SELECT 1 FROM ` + o + ` o WHERE o.msg_key = ?)`
	for _, s := range []*string{&q.nextSeq, &q.insert, &q.markPublished, &q.markRetry,
		&q.markDead, &q.release, &q.prune, &q.pruneKeys, &q.backlog, &q.inboxInsert, &q.inboxCleanup,
		&q.inboxKeyEnsure, &q.inboxKeyLock, &q.inboxKeyAdvance, &q.inboxKeyGet, &q.inboxKeyCleanup} {
		*s = q.rebind(*s)
	}
	return q
}

// rebind turns "?" placeholders into "$1", "$2"... for PostgreSQL. The
// statements above contain no "?" in literals.
func (q queries) rebind(s string) string {
	if q.d != Postgres || !strings.Contains(s, "?") {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// in returns "(?, ?, ...)" for n values, numbered from first+1 for
// PostgreSQL.
func (q queries) in(first, n int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		if q.d == Postgres {
			b.WriteString("$" + strconv.Itoa(first+i+1))
		} else {
			b.WriteByte('?')
		}
	}
	b.WriteByte(')')
	return b.String()
}

// Claiming.
//
// A claim takes due heads: rows that are pending, due, not leased (or the
// lease ran out), and the lowest pending seq of their key. The head test
// comes first, the lease and due tests after it: a leased head holds its
// key. Heads are decided on one snapshot and then locked by id with
// FOR UPDATE SKIP LOCKED, the row's own state and lease re-checked on its
// latest version; that suffices because a head stays the head while it is
// pending (a lower seq committed no later than it; published and dead are
// final).
//
// With keys, the claim looks only at those keys (the ones the relay just
// settled: their next rows are the heads to take next), a few index
// probes; without, at every key: on PostgreSQL the due rows in due order
// until the batch is full, on MySQL and SQLite one pass over the pending
// rows.

// headsSQL selects the ids of at most limit due heads, of keys only when
// nkeys > 0, in next_attempt_at order. Arguments: the keys (PostgreSQL:
// one text[] array literal, see pgArray), then limit.
func (q queries) headsSQL(nkeys int) string {
	o := q.outbox
	if q.d == Postgres {
		if nkeys > 0 {
			// One index probe per key: its lowest pending seq. The keys
			// are one text[] argument: one statement text for any number.
			return `SELECT h.id FROM unnest(?::text[]) AS k(msg_key)
    CROSS JOIN LATERAL (SELECT p.id, p.next_attempt_at, p.lease_until FROM ` + o + ` p
                        WHERE p.state = 0 AND p.msg_key = k.msg_key ORDER BY p.seq LIMIT 1) h
    WHERE h.next_attempt_at <= now() AND (h.lease_until IS NULL OR h.lease_until <= now())
    ORDER BY h.next_attempt_at LIMIT ?`
		}
		// The due rows in next_attempt_at order (the due index), each
		// with one probe of the pending-heads index for a lower pending
		// seq of its key, until limit heads are found: it reads about the
		// batch when most due rows are heads, not every pending row, and
		// needs no sort. It reads further past rows of keys whose head is
		// in flight or backing off (each rejected by its probe); the relay
		// spaces such claims out (see claimLoop). Planned for the table
		// as it is (claimConn).
		return `SELECT o.id FROM ` + o + ` o
    WHERE o.state = 0 AND o.next_attempt_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
      AND NOT EXISTS (SELECT 1 FROM ` + o + ` p WHERE p.state = 0 AND p.msg_key = o.msg_key AND p.seq < o.seq)
    ORDER BY o.next_attempt_at LIMIT ?`
	}
	// min(seq) per key: a loose index scan on InnoDB's (state, msg_key,
	// seq), one pass over SQLite's partial index. (A NOT EXISTS probe per
	// pending row would cost a lookup each: with a deep backlog per key and
	// the heads in flight, a claim would read the whole backlog to find
	// nothing.)
	only := ""
	if nkeys > 0 {
		only = " AND msg_key IN " + q.in(0, nkeys)
	}
	return `SELECT o.id FROM ` + o + ` o
    JOIN (SELECT msg_key, min(seq) AS seq FROM ` + o + ` WHERE state = 0` + only + ` GROUP BY msg_key) h
      ON o.msg_key = h.msg_key AND o.seq = h.seq
    WHERE ` + q.due + `
    ORDER BY o.next_attempt_at LIMIT ?`
}

// claimSQL is the one-statement claim of PostgreSQL and SQLite: it leases
// the heads to an owner and returns them. Arguments: PostgreSQL the heads'
// arguments, owner, lease; SQLite owner, lease, the heads' arguments.
func (q queries) claimSQL(nkeys int) string {
	o := q.outbox
	lease := `lease_owner = ?, lease_until = ` + q.plus("?") + `, attempts = attempts + 1`
	if q.d == Postgres {
		// Each head is locked by a primary-key lookup of its own (LATERAL),
		// so that no plan can scan the due rows once per head.
		return q.rebind(`WITH h AS (` + q.headsSQL(nkeys) + `),
c AS (SELECT x.id FROM h CROSS JOIN LATERAL (
        SELECT o.id FROM ` + o + ` o WHERE o.id = h.id AND ` + q.due + ` FOR UPDATE SKIP LOCKED) x)
UPDATE ` + o + ` o SET ` + strings.ReplaceAll(lease, "attempts + 1", "o.attempts + 1") + `
FROM c WHERE o.id = c.id
RETURNING ` + q.cols)
	}
	// SQLite: one writer at a time; the statement is atomic.
	cols := q.colsOf(o) // RETURNING names the table itself
	return `UPDATE ` + o + ` SET ` + lease + ` WHERE id IN (` + q.headsSQL(nkeys) + `)
RETURNING ` + cols
}

// MySQL claims in three steps of one transaction (see claimMySQL): a
// locking read there sees the latest committed rows while the derived
// table finding the heads reads the statement's older snapshot, so one
// locking statement could take rows committed in between (seq 1, 2 and 3
// of one transaction) all for heads.

// lockSQL locks n claimable rows by id, skipping rows another claim
// holds, and returns their columns (MySQL).
func (q queries) lockSQL(n int) string {
	return `SELECT ` + q.cols + ` FROM ` + q.outbox + ` o WHERE ` + q.due + ` AND o.id IN ` + q.in(0, n) + ` FOR UPDATE SKIP LOCKED`
}

// leaseSQL leases n locked rows: arguments owner, lease, ids (MySQL).
func (q queries) leaseSQL(n int) string {
	return `UPDATE ` + q.outbox + ` SET lease_owner = ?, lease_until = ` + q.plus("?") + `, attempts = attempts + 1 WHERE id IN ` + q.in(0, n)
}
