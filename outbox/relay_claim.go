package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// claim leases up to n due heads (of keys only, when given) to this relay
// for the lease duration, counting an attempt for each.
func (r *Relay) claim(n int, keys []string) ([]row, error) {
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	q := r.s.q
	lease := r.c.lease.Microseconds()
	heads := make([]any, 0, len(keys)+1)
	for _, k := range keys {
		heads = append(heads, k)
	}
	heads = append(heads, n)
	var rows []row
	var err error
	switch r.s.dialect {
	case Postgres:
		rows, err = r.queryRows(ctx, r.s.db, q.claimSQL(len(keys)), append(heads, r.owner, lease)...)
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
