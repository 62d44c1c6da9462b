package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// DeadFilter selects dead rows for [Store.DeadRows] and [Store.Redrive].
// Every field that is set must match; the zero DeadFilter selects every
// dead row.
type DeadFilter struct {
	// Key selects the rows of one aggregate key (the order id).
	Key string
	// ID selects one event id.
	ID string
	// Name selects one event name ("order.created").
	Name string
	// Reason selects rows whose last error contains it, ignoring case:
	// "too large", "invalid", "no queue bound".
	Reason string
	// OlderThan selects rows dead for at least this long, by the
	// database's clock.
	OlderThan time.Duration
	// Limit is how many rows at most; 0 means all of them.
	Limit int
}

func (f DeadFilter) validate() error {
	var bad []string
	if f.OlderThan < 0 {
		bad = append(bad, fmt.Sprintf("OlderThan %v: want 0 or more", f.OlderThan))
	}
	if f.Limit < 0 {
		bad = append(bad, fmt.Sprintf("Limit %d: want 0 (all) or more", f.Limit))
	}
	if len(bad) > 0 {
		return errors.New("DeadFilter: " + strings.Join(bad, "; "))
	}
	return nil
}

// DeadRow is a dead outbox row: the message the relay gave up on, and why.
type DeadRow struct {
	// Message is the stored message, as Publish wrote it.
	Message broker.Message
	// Seq is its number in its key's sequence.
	Seq int64
	// Attempts is how many times a relay claimed it.
	Attempts int
	// Reason is the last publish error.
	Reason string
	// CreatedAt is when its transaction wrote it, DeadAt when it died.
	CreatedAt, DeadAt time.Time
}

// deadBatch is how many rows one statement reads or re-drives.
const deadBatch = 500

// DeadRows returns the dead rows f selects, by key and then sequence:
// the rows [Store.Redrive] would put back for the same filter, at this
// moment. A bad filter is an error matching broker.ErrInvalid.
func (s *Store) DeadRows(ctx context.Context, f DeadFilter) ([]DeadRow, error) {
	if err := f.validate(); err != nil {
		return nil, invalid("dead rows", err)
	}
	return pages(f, func(after *DeadRow, n int) ([]DeadRow, error) {
		rows, err := s.deadPage(ctx, s.db, f, after, n, false)
		if err != nil {
			return nil, dbErr("dead rows", err)
		}
		return rows, nil
	})
}

// pages calls page for the dead rows f selects, deadBatch at a time in
// (key, seq) order, each page after the last row of the one before, up to
// f.Limit, and returns them all (those of the pages before an error too).
func pages(f DeadFilter, page func(after *DeadRow, n int) ([]DeadRow, error)) ([]DeadRow, error) {
	var out []DeadRow
	var after *DeadRow
	for f.Limit == 0 || len(out) < f.Limit {
		n := deadBatch
		if f.Limit > 0 {
			n = min(n, f.Limit-len(out))
		}
		rows, err := page(after, n)
		out = append(out, rows...)
		if err != nil || len(rows) < n {
			return out, err
		}
		after = &out[len(out)-1]
	}
	return out, nil
}

// Redrive puts the dead rows f selects back to pending, as if just
// written: their attempts start again from 0 and the relays publish them
// (this process's at once, others' within their poll interval). It
// returns the rows it re-drove, as they were while dead. Each batch of
// rows is re-driven in one transaction, a key's rows in sequence order.
//
// What it does to a key's order: a re-driven row is published after the
// rows of its key that were published while it was dead (its successors
// moved on when it died), and before the key's rows still pending (it has
// the lowest sequence number of them). If a row of its key is being
// published at that moment, it waits for that row's lease: a key still
// has at most one message in flight. Consumers that need one order's
// events in sequence must therefore expect a re-driven event after later
// ones (check a version), and deduplicate on the id as always.
//
// A bad filter is an error matching broker.ErrInvalid; a database error
// returns the rows re-driven by the batches committed before it.
func (s *Store) Redrive(ctx context.Context, f DeadFilter) ([]DeadRow, error) {
	if err := f.validate(); err != nil {
		return nil, invalid("redrive", err)
	}
	// The pages follow the key order, so that a row re-driven and dead
	// again while this runs is not taken twice.
	return pages(f, func(after *DeadRow, n int) ([]DeadRow, error) {
		rows, err := s.redriveBatch(ctx, f, after, n)
		if len(rows) > 0 {
			s.Notify()
		}
		return rows, err
	})
}

// redriveBatch re-drives up to n rows after the row after, in one
// transaction: it locks them, then the pending rows of their keys (a
// relay claiming one of them meanwhile would otherwise not see the
// re-driven row as its key's head), reads how long the leases of those
// keys still run, and makes the rows pending, due once the lease of their
// key's row in flight ends.
func (s *Store) redriveBatch(ctx context.Context, f DeadFilter, after *DeadRow, n int) ([]DeadRow, error) {
	var opts *sql.TxOptions
	if s.dialect != SQLite { // SQLite has one isolation level (and one writer)
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, dbErr("redrive", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := s.deadPage(ctx, tx, f, after, n, true)
	if err != nil {
		return nil, dbErr("redrive", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	var keys []any
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen[r.Message.Key] {
			seen[r.Message.Key] = true
			keys = append(keys, r.Message.Key)
		}
	}
	o := s.tables.Outbox
	if s.dialect != SQLite {
		lock, err := tx.QueryContext(ctx, s.q.rebind(`SELECT id FROM `+o+` WHERE state = 0 AND msg_key IN `+s.q.in(0, len(keys))+` ORDER BY id FOR UPDATE`), keys...)
		if err != nil {
			return nil, dbErr("redrive", err)
		}
		if err := errors.Join(drain(lock), lock.Close()); err != nil {
			return nil, dbErr("redrive", err)
		}
	}
	wait := map[string]int64{} // key -> microseconds its lease still runs
	leases, err := tx.QueryContext(ctx, s.q.rebind(`SELECT msg_key, `+s.leaseLeft()+` FROM `+o+
		` WHERE state = 0 AND msg_key IN `+s.q.in(0, len(keys))+` AND lease_until > `+s.q.now+` GROUP BY msg_key`), keys...)
	if err != nil {
		return nil, dbErr("redrive", err)
	}
	for leases.Next() {
		var k string
		var us float64
		if err := leases.Scan(&k, &us); err != nil {
			leases.Close()
			return nil, dbErr("redrive", err)
		}
		wait[k] = int64(us)
	}
	if err := errors.Join(leases.Err(), leases.Close()); err != nil {
		return nil, dbErr("redrive", err)
	}
	byDelay := map[int64][]any{}
	for _, r := range rows {
		d := wait[r.Message.Key]
		byDelay[d] = append(byDelay[d], r.Message.ID)
	}
	for d, ids := range byDelay {
		q := s.q.rebind(`UPDATE ` + o + ` SET state = 0, attempts = 0, next_attempt_at = ` + s.q.plus("?") +
			`, dead_at = NULL, lease_owner = NULL, lease_until = NULL WHERE state = 2 AND id IN ` + s.q.in(1, len(ids)))
		if _, err := tx.ExecContext(ctx, q, append([]any{d}, ids...)...); err != nil {
			return nil, dbErr("redrive", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, dbErr("redrive", err)
	}
	return rows, nil
}

func drain(rs *sql.Rows) error {
	for rs.Next() {
	}
	return rs.Err()
}

// leaseLeft is the expression for how many microseconds the latest lease
// of a group of rows still runs.
func (s *Store) leaseLeft() string {
	switch s.dialect {
	case Postgres:
		return `EXTRACT(EPOCH FROM max(lease_until) - now())::float8 * 1000000`
	case MySQL:
		return `TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), max(lease_until))`
	default:
		return `max(lease_until) - ` + s.q.now
	}
}

// deadPage reads up to n dead rows f selects, after the row after in
// (key, seq) order, locking them when lock is set (not on SQLite, whose
// transaction holds the one write lock).
func (s *Store) deadPage(ctx context.Context, db querier, f DeadFilter, after *DeadRow, n int, lock bool) ([]DeadRow, error) {
	where := []string{"state = 2"}
	var args []any
	add := func(cond string, vals ...any) {
		where = append(where, cond)
		args = append(args, vals...)
	}
	if f.Key != "" {
		add("msg_key = ?", f.Key)
	}
	if f.ID != "" {
		add("id = ?", f.ID)
	}
	if f.Name != "" {
		add("name = ?", f.Name)
	}
	if f.Reason != "" {
		esc := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(strings.ToLower(f.Reason))
		add("LOWER(last_error) LIKE ? ESCAPE '!'", "%"+esc+"%")
	}
	if f.OlderThan > 0 {
		add("dead_at <= "+s.q.plus("?"), -f.OlderThan.Microseconds())
	}
	if after != nil {
		add("(msg_key > ? OR (msg_key = ? AND seq > ?))", after.Message.Key, after.Message.Key, after.Seq)
	}
	at := func(col string) string {
		if s.dialect == MySQL {
			return "DATE_FORMAT(" + col + ", '%Y-%m-%d %H:%i:%s.%f')" // a string whatever the driver's parseTime
		}
		return col
	}
	q := `SELECT id, name, msg_key, seq, body, content_type, headers, ` + at("occurred_at") + `, attempts, ` +
		at("created_at") + `, ` + at("dead_at") + `, last_error FROM ` + s.tables.Outbox +
		` WHERE ` + strings.Join(where, " AND ") + ` ORDER BY msg_key, seq LIMIT ?`
	if lock && s.dialect != SQLite {
		q += ` FOR UPDATE`
	}
	rs, err := db.QueryContext(ctx, s.q.rebind(q), append(args, n)...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []DeadRow
	for rs.Next() {
		var r DeadRow
		var headers, reason sql.NullString
		var occurred, created, dead any
		if err := rs.Scan(&r.Message.ID, &r.Message.Name, &r.Message.Key, &r.Seq, &r.Message.Body, &r.Message.ContentType,
			&headers, &occurred, &r.Attempts, &created, &dead, &reason); err != nil {
			return nil, err
		}
		if headers.Valid && headers.String != "" {
			if err := json.Unmarshal([]byte(headers.String), &r.Message.Headers); err != nil {
				return nil, fmt.Errorf("row %s: headers: %w", r.Message.ID, err)
			}
		}
		for _, t := range []struct {
			v   any
			to  *time.Time
			col string
		}{{occurred, &r.Message.Time, "occurred_at"}, {created, &r.CreatedAt, "created_at"}, {dead, &r.DeadAt, "dead_at"}} {
			if t.v == nil {
				continue // dead_at of a row marked dead by hand
			}
			v, err := parseTime(t.v)
			if err != nil {
				return nil, fmt.Errorf("row %s: %s: %w", r.Message.ID, t.col, err)
			}
			*t.to = v
		}
		r.Reason = reason.String
		out = append(out, r)
	}
	return out, rs.Err()
}
