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

// Tables names the three tables. An empty field takes its default.
type Tables struct {
	// Outbox holds one row per stored message. Default "domainevents_outbox".
	Outbox string
	// Keys holds the per-key sequence counters. Default
	// "domainevents_outbox_keys".
	Keys string
	// Inbox holds (consumer, event id) of handled deliveries. Default
	// "domainevents_inbox".
	Inbox string
}

// DefaultTables are the names used when [WithTables] is not given.
var DefaultTables = Tables{Outbox: "domainevents_outbox", Keys: "domainevents_outbox_keys", Inbox: "domainevents_inbox"}

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
	return t
}

func (t Tables) validate() error {
	var bad []string
	for _, f := range []struct{ field, name string }{{"Outbox", t.Outbox}, {"Keys", t.Keys}, {"Inbox", t.Inbox}} {
		if !identifier.MatchString(f.name) {
			bad = append(bad, fmt.Sprintf("Tables.%s %q: want letters, digits and underscores (at most 48, optionally schema.table)", f.field, f.name))
		}
	}
	if t.Outbox == t.Keys || t.Outbox == t.Inbox || t.Keys == t.Inbox {
		bad = append(bad, fmt.Sprintf("Tables %q, %q, %q: the three names must differ", t.Outbox, t.Keys, t.Inbox))
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
	o, k, in := t.Outbox, t.Keys, t.Inbox
	switch d {
	case Postgres:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + o + ` (
    id              TEXT        NOT NULL PRIMARY KEY,   -- event id, the consumers' idempotency key
    name            TEXT        NOT NULL,               -- event name: routing key / header
    msg_key         TEXT        NOT NULL,               -- aggregate id: order is kept per key
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
    CONSTRAINT ` + indexName(o, "key_seq") + ` UNIQUE (msg_key, seq)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "due") + ` ON ` + o + ` (next_attempt_at) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "head") + ` ON ` + o + ` (msg_key, seq) WHERE state = 0`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(o, "published") + ` ON ` + o + ` (published_at) WHERE state = 1`,
			`CREATE TABLE IF NOT EXISTS ` + k + ` (
    msg_key  TEXT   NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL                            -- seq of the key's last stored message
)`,
			`CREATE TABLE IF NOT EXISTS ` + in + ` (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)`,
			`CREATE INDEX IF NOT EXISTS ` + indexName(in, "processed") + ` ON ` + in + ` (processed_at)`,
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
	d Dialect
	// now is the current time; plus(p) is now plus p microseconds.
	now  string
	plus func(p string) string

	// insert stores one message; for PostgreSQL it also takes the seq.
	nextSeq, insert string
	// claim: PostgreSQL and SQLite, one statement returning the claimed
	// rows; MySQL, claimHeads, then claimSelect and claimLease (plus the id
	// list) in one transaction.
	claim, claimHeads, claimSelect, claimLease string
	// markPublished needs the id list appended; markRetry, markDead one row.
	markPublished, markRetry, markDead, release string
	prune, pruneKeys, backlog                   string
	inboxInsert, inboxCleanup                   string
}

func newQueries(d Dialect, t Tables) queries {
	q := queries{d: d}
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

	// The columns a claim returns, in the order scanRow reads them.
	cols := "o.id, o.name, o.msg_key, o.seq, o.body, o.content_type, o.headers, o.occurred_at, o.attempts"
	if d == MySQL {
		// A string whatever the driver's parseTime setting.
		cols = "o.id, o.name, o.msg_key, o.seq, o.body, o.content_type, o.headers, DATE_FORMAT(o.occurred_at, '%Y-%m-%d %H:%i:%s.%f'), o.attempts"
	}
	// A due head: pending, due, not leased (or the lease ran out), and no
	// pending row of its key with a lower seq.
	heads := `FROM ` + o + ` o
WHERE o.state = 0 AND o.next_attempt_at <= ` + now + `
  AND (o.lease_until IS NULL OR o.lease_until <= ` + now + `)
  AND NOT EXISTS (SELECT 1 FROM ` + o + ` p WHERE p.state = 0 AND p.msg_key = o.msg_key AND p.seq < o.seq)
ORDER BY o.next_attempt_at
LIMIT ?`

	switch d {
	case Postgres:
		q.insert = `WITH s AS (
  INSERT INTO ` + k + ` AS k (msg_key, last_seq) VALUES (?, 1)
  ON CONFLICT (msg_key) DO UPDATE SET last_seq = k.last_seq + 1
  RETURNING last_seq)
INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
SELECT ?, ?, ?, s.last_seq, ?, ?, ?, ?, now(), now() FROM s`
		q.claim = `WITH c AS (SELECT o.id ` + heads + ` FOR UPDATE SKIP LOCKED)
UPDATE ` + o + ` o SET lease_owner = ?, lease_until = ` + q.plus("?") + `, attempts = o.attempts + 1
FROM c WHERE o.id = c.id
RETURNING ` + cols
	case MySQL:
		q.nextSeq = `INSERT INTO ` + k + ` (msg_key, last_seq) VALUES (?, LAST_INSERT_ID(1))
ON DUPLICATE KEY UPDATE last_seq = LAST_INSERT_ID(last_seq + 1)`
		q.insert = `INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`
		// Two steps: a locking read sees the latest committed rows while
		// its NOT EXISTS subquery reads the statement's older snapshot, so
		// one locking statement can take rows committed in between (seq 1,
		// 2 and 3 of one transaction) all for heads. The heads are decided
		// on one snapshot by a plain read (claimHeads), then locked by id
		// with their own state and lease re-checked on the latest row
		// (claimSelect): a head stays the head while it is pending.
		q.claimHeads = `SELECT o.id ` + heads
		q.claimSelect = `SELECT ` + cols + ` FROM ` + o + ` o
WHERE o.state = 0 AND o.next_attempt_at <= ` + now + ` AND (o.lease_until IS NULL OR o.lease_until <= ` + now + `)
  AND o.id IN `
		q.claimLease = `UPDATE ` + o + ` SET lease_owner = ?, lease_until = ` + q.plus("?") + `, attempts = attempts + 1 WHERE id IN `
	case SQLite:
		q.nextSeq = `INSERT INTO ` + k + ` (msg_key, last_seq) VALUES (?, 1)
ON CONFLICT (msg_key) DO UPDATE SET last_seq = last_seq + 1
RETURNING last_seq`
		q.insert = `INSERT INTO ` + o + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ` + now + `, ` + now + `)`
		q.claim = `UPDATE ` + o + ` SET lease_owner = ?, lease_until = ` + q.plus("?") + `, attempts = attempts + 1
WHERE id IN (SELECT o.id ` + heads + `)
RETURNING ` + strings.ReplaceAll(cols, "o.", "")
	}

	q.markPublished = `UPDATE ` + o + ` SET state = 1, published_at = ` + now + `, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id IN `
	q.markRetry = `UPDATE ` + o + ` SET next_attempt_at = ` + q.plus("?") + `, last_error = ?, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id = ?`
	q.markDead = `UPDATE ` + o + ` SET state = 2, dead_at = ` + now + `, last_error = ?, lease_owner = NULL, lease_until = NULL
WHERE state = 0 AND lease_owner = ? AND id = ?`
	q.release = `UPDATE ` + o + ` SET lease_owner = NULL, lease_until = NULL WHERE state = 0 AND lease_owner = ?`

	older := q.plus("?") // now - retention: the parameter is negative
	switch d {
	case Postgres:
		q.prune = `DELETE FROM ` + o + ` WHERE id IN (SELECT id FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?)`
		q.backlog = `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM ` + o + ` WHERE state = 0`
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, now()) ON CONFLICT DO NOTHING`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?)`
	case MySQL:
		q.prune = `DELETE FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?`
		q.backlog = `SELECT count(*), COALESCE(TIMESTAMPDIFF(MICROSECOND, min(created_at), UTC_TIMESTAMP(6)) / 1000000, 0) FROM ` + o + ` WHERE state = 0`
		// ON DUPLICATE KEY UPDATE, not INSERT IGNORE: IGNORE would also
		// turn a too-long id into a silently truncated one.
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE event_id = event_id`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?`
	case SQLite:
		q.prune = `DELETE FROM ` + o + ` WHERE rowid IN (SELECT rowid FROM ` + o + ` WHERE state = 1 AND published_at < ` + older + ` LIMIT ?)`
		q.backlog = `SELECT count(*), COALESCE((` + now + ` - min(created_at)) / 1000000.0, 0) FROM ` + o + ` WHERE state = 0`
		q.inboxInsert = `INSERT INTO ` + t.Inbox + ` (consumer, event_id, processed_at) VALUES (?, ?, ` + now + `) ON CONFLICT DO NOTHING`
		q.inboxCleanup = `DELETE FROM ` + t.Inbox + ` WHERE rowid IN (SELECT rowid FROM ` + t.Inbox + ` WHERE processed_at < ` + older + ` LIMIT ?)`
	}
	// A key's counter row goes once no row of the key is left, and only if
	// no writer moved it meanwhile (last_seq is re-read under the row lock,
	// so a writer that bumped it keeps it): a new row must never restart at
	// seq 1 while an older row of its key exists.
	q.pruneKeys = `DELETE FROM ` + k + ` WHERE msg_key = ? AND last_seq = ? AND NOT EXISTS (SELECT 1 FROM ` + o + ` o WHERE o.msg_key = ?)`
	for _, s := range []*string{&q.nextSeq, &q.insert, &q.claim, &q.claimHeads, &q.claimSelect, &q.claimLease, &q.markPublished, &q.markRetry,
		&q.markDead, &q.release, &q.prune, &q.pruneKeys, &q.backlog, &q.inboxInsert, &q.inboxCleanup} {
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
