package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// claimConn is a connection of the relay's own for claiming on
// PostgreSQL, set to plan every statement for the table as it is now
// (plan_cache_mode = force_custom_plan). pgx prepares each statement once
// per connection, and PostgreSQL switches a prepared statement to a
// generic plan after five custom ones: made while the table is nearly
// empty, with estimates of one row, that plan can read the pending rows
// once per head claimed, and is kept until ANALYZE or DDL invalidates it
// (bench/README.md: the relay then fell behind for good in 6 of 8
// catch-up runs). A custom plan costs a planning per claim (well under a
// millisecond) and follows the table's size. The claim loop and the
// advancer each hold one; it is discarded (not handed back to the pool
// with the setting) after a failure and when the relay stops. Other
// dialects claim through the pool: MySQL and MariaDB plan each execution,
// SQLite's planner has no cached generic plans.
type claimConn struct {
	c *sql.Conn
}

// get returns the connection to claim on, opening and setting one if
// needed.
func (cc *claimConn) get(ctx context.Context, s *Store) (querier, error) {
	if s.dialect != Postgres {
		return s.db, nil
	}
	if cc.c != nil {
		return cc.c, nil
	}
	c, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.ExecContext(ctx, "SET plan_cache_mode = force_custom_plan"); err != nil {
		discard(c)
		_ = c.Close()
		return nil, fmt.Errorf("set plan_cache_mode: %w", err)
	}
	cc.c = c
	return c, nil
}

// drop closes the connection, never handing it back to the pool with the
// setting.
func (cc *claimConn) drop() {
	if cc.c == nil {
		return
	}
	discard(cc.c)
	_ = cc.c.Close()
	cc.c = nil
}

// claim leases up to n due heads (of keys only, when given) to this relay
// for the lease duration, counting an attempt for each, on cc's
// connection (PostgreSQL).
func (r *Relay) claim(cc *claimConn, n int, keys []string) ([]row, error) {
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	q := r.s.q
	lease := r.c.lease.Microseconds()
	heads := make([]any, 0, len(keys)+1)
	switch {
	case r.s.dialect == Postgres && len(keys) > 0:
		heads = append(heads, pgArray(keys)) // one text[]
	default:
		for _, k := range keys {
			heads = append(heads, k)
		}
	}
	heads = append(heads, n)
	var rows []row
	var err error
	switch r.s.dialect {
	case Postgres:
		var db querier
		if db, err = cc.get(ctx, r.s); err == nil {
			rows, err = r.queryRows(ctx, db, q.claimSQL(len(keys)), append(heads, r.owner, lease)...)
			if err != nil {
				cc.drop() // a broken or cancelled connection: the next claim takes a new one
			}
		}
	case SQLite:
		rows, err = r.queryRows(ctx, r.s.db, q.claimSQL(len(keys)), append([]any{r.owner, lease}, heads...)...)
	case MySQL:
		rows, err = r.claimMySQL(ctx, len(keys), heads, lease)
	}
	if err != nil {
		return nil, dbErr("claim", err)
	}
	r.claimed.Add(int64(len(rows)))
	return rows, nil
}

// claimMySQL claims in one transaction at READ COMMITTED (record locks on
// the claimed rows only, no gap locks): the heads by a plain read on one
// snapshot, then those rows locked by id, skipping rows another claim
// holds and re-checking state and lease on their latest version, then
// leased.
func (r *Relay) claimMySQL(ctx context.Context, nkeys int, heads []any, lease int64) ([]row, error) {
	q := r.s.q
	tx, err := r.s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	ids, err := tx.QueryContext(ctx, q.headsSQL(nkeys), heads...)
	if err != nil {
		return nil, err
	}
	var args []any
	for ids.Next() {
		var id string
		if err := ids.Scan(&id); err != nil {
			ids.Close()
			return nil, err
		}
		args = append(args, id)
	}
	if err := errors.Join(ids.Err(), ids.Close()); err != nil || len(args) == 0 {
		return nil, err
	}
	rows, err := r.queryRows(ctx, tx, q.lockSQL(len(args)), args...)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	largs := []any{r.owner, lease}
	for i := range rows {
		rows[i].attempts++ // read before the lease's increment
		largs = append(largs, rows[i].msg.ID)
	}
	if _, err := tx.ExecContext(ctx, q.leaseSQL(len(rows)), largs...); err != nil {
		return nil, err
	}
	return rows, tx.Commit()
}

// pgArray is strs as a PostgreSQL array literal ({"a","b"}), for a
// ?::text[] argument: a string, so that every driver sends it as it is
// (lib/pq takes no []string).
func pgArray(strs []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range strs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (r *Relay) queryRows(ctx context.Context, db querier, query string, args ...any) ([]row, error) {
	rs, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var w row
		var headers sql.NullString
		var at any
		if err := rs.Scan(&w.msg.ID, &w.msg.Name, &w.msg.Key, &w.seq, &w.msg.Body, &w.msg.ContentType, &headers, &at, &w.attempts, &w.more); err != nil {
			return nil, err
		}
		if headers.Valid && headers.String != "" {
			if err := json.Unmarshal([]byte(headers.String), &w.msg.Headers); err != nil {
				return nil, fmt.Errorf("row %s: headers: %w", w.msg.ID, err)
			}
		}
		t, err := parseTime(at)
		if err != nil {
			return nil, fmt.Errorf("row %s: occurred_at: %w", w.msg.ID, err)
		}
		w.msg.Time = t
		if w.msg.Headers == nil {
			w.msg.Headers = make(map[string]string, 1)
		}
		if !unschedule(&w.msg) { // a scheduled message has no place in its key's sequence
			w.msg.Headers[broker.HeaderSeq] = strconv.FormatInt(w.seq, 10) // consumers apply a key's events in this order
		}
		out = append(out, w)
	}
	return out, rs.Err()
}

// parseTime reads occurred_at as the drivers return it: time.Time
// (PostgreSQL), a "2006-01-02 15:04:05.000000" string (MySQL, formatted by
// the query), or unix microseconds (SQLite).
func parseTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		return v.UTC(), nil
	case int64:
		return time.UnixMicro(v).UTC(), nil
	case []byte:
		return time.Parse(mysqlTime, string(v))
	case string:
		return time.Parse(mysqlTime, v)
	default:
		return time.Time{}, fmt.Errorf("unexpected %T", v)
	}
}
