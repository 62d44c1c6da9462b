package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/outbox"
)

// claimPlans (-claim-plans) shows what the relay's claim costs and which
// plan it gets, outside the relay, on the relay's own SQL text (captured
// from a relay run through the counting connector):
//
// PostgreSQL, the end-to-end shape (one pending row per key):
//
//   - "auto": the claim is PREPAREd and executed six times on the empty
//     table (as the relay's pgx connection does while writers start), so
//     that PostgreSQL's plan cache settles on a generic plan; then the
//     table is filled to 5,000, 10,000 and 15,000 pending rows and the
//     prepared claim is run under EXPLAIN ANALYZE (in a transaction
//     rolled back);
//   - "force_custom_plan": the same with plan_cache_mode=force_custom_plan;
//   - "auto+ANALYZE": the same, the table ANALYZEd before each EXPLAIN
//     (which also drops the cached plan), as autovacuum would do.
//
// PostgreSQL and MariaDB, the drain shape (100,000 pending over 1,000
// keys, ANALYZEd): the full claim and the advance claim (100 keys) under
// EXPLAIN ANALYZE / ANALYZE FORMAT=JSON.
func claimPlans() error {
	ctx := context.Background()
	if err := pgPlans(ctx); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if err := mysqlPlans(ctx); err != nil {
		return fmt.Errorf("MariaDB: %w", err)
	}
	return nil
}

// nopBroker confirms everything at once.
type nopBroker struct{}

func (nopBroker) Publish(context.Context, broker.Message) error { return nil }
func (nopBroker) Close(context.Context) error                   { return nil }

// captureClaims runs a relay over a few rows (3 keys with 3 rows each, so
// that it advances) and returns the SQL of each statement kind it sent.
func captureClaims(ctx context.Context, d dbConn) (samples *dbCounter, tables outbox.Tables, drop func(), err error) {
	counter := newDBCounter()
	db, err := d.open(counter)
	if err != nil {
		return nil, tables, nil, err
	}
	prefix := "plans_" + uuid.NewString()[:8] + "_"
	tables = outbox.Tables{Outbox: prefix + "outbox", Keys: prefix + "keys", Inbox: prefix + "inbox"}
	drop = func() {
		for _, t := range []string{tables.Outbox, tables.Keys, tables.Inbox} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + d.quote(t))
		}
		_ = db.Close()
	}
	store, err := outbox.New(db, d.dialect(), outbox.WithTables(tables))
	if err == nil {
		err = store.Migrate(ctx)
	}
	var msgs []broker.Message
	if err == nil {
		msgs, err = drainMessages(9, 3)
	}
	if err == nil {
		err = prefillOutbox(ctx, d, db, tables, store, msgs, drainOpts{keys: 3, prefillStore: true})
	}
	if err != nil {
		drop()
		return nil, tables, nil, err
	}
	relay, err := outbox.NewRelay(store, nopBroker{}, outbox.WithLogger(quiet()))
	if err != nil {
		drop()
		return nil, tables, nil, err
	}
	err = waitFor(ctx, "published", time.Minute, func() (int64, int64) { return relay.Stats().Published, int64(len(msgs)) })
	_ = relay.Close(ctx)
	if err != nil {
		drop()
		return nil, tables, nil, err
	}
	return counter, tables, drop, nil
}

// fill tops the outbox up with pending rows: n more, perKey of each key.
func fill(ctx context.Context, d dbConn, db *sql.DB, tables outbox.Tables, n, perKey int) error {
	msgs, err := drainMessages(n, max(1, n/perKey))
	if err != nil {
		return err
	}
	return prefillOutbox(ctx, d, db, tables, nil, msgs, drainOpts{keys: max(1, n/perKey)})
}

var planTime = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)

func pgPlans(ctx context.Context) error {
	d := benchDB("postgres", "")
	counter, tables, drop, err := captureClaims(ctx, d)
	if err != nil {
		return err
	}
	defer drop()
	full, adv := counter.sample("claim-full"), counter.sample("claim-advance")
	fmt.Printf("## PostgreSQL: the relay's full claim\n\n```sql\n%s\n```\n\n## and its advance claim (%d keys here)\n\n```sql\n%s\n```\n\n",
		full, max(strings.Count(adv, "::text)"), 1), adv)
	db, err := d.open(nil)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	exec := func(q string, args ...any) error { _, err := conn.Exec(ctx, q, args...); return err }
	explain := func(stmt string) (string, float64, error) {
		if err := exec("BEGIN"); err != nil {
			return "", 0, err
		}
		defer func() { _ = exec("ROLLBACK") }()
		rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+stmt, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return "", 0, err
		}
		var b strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				rows.Close()
				return "", 0, err
			}
			b.WriteString(line + "\n")
		}
		rows.Close()
		var ms float64
		if m := planTime.FindStringSubmatch(b.String()); m != nil {
			fmt.Sscan(m[1], &ms)
		}
		return b.String(), ms, rows.Err()
	}
	truncate := func() error { return exec("TRUNCATE " + tables.Outbox + ", " + tables.Keys) }

	fmt.Println("## PostgreSQL: the full claim (batch 100) at 5,000-15,000 pending rows, one per key (the end-to-end shape)")
	fmt.Println()
	fmt.Println("| plan_cache_mode | pending | plan used | generic/custom plans so far | ms per claim of 100 |")
	fmt.Println("|---|---:|---|---|---:|")
	var plansOut strings.Builder
	for _, mode := range []string{"auto", "force_custom_plan", "auto+ANALYZE"} {
		if err := truncate(); err != nil {
			return err
		}
		pcm, _, _ := strings.Cut(mode, "+")
		if err := exec("DEALLOCATE ALL"); err != nil {
			return err
		}
		if err := exec("SET plan_cache_mode = " + pcm); err != nil {
			return err
		}
		// $1 limit, $2 owner, $3 lease (µs): the relay's argument order.
		if err := exec("PREPARE claim AS " + full); err != nil {
			return err
		}
		for range 6 { // on the empty table, as the relay does while writers start
			if err := exec("EXECUTE claim(100, 'plans', 30000000)"); err != nil {
				return err
			}
		}
		have := 0
		for _, pending := range []int{5000, 10000, 15000} {
			if err := fill(ctx, d, db, tables, pending-have, 1); err != nil {
				return err
			}
			have = pending
			if strings.HasSuffix(mode, "ANALYZE") {
				if err := exec("ANALYZE " + tables.Outbox); err != nil {
					return err
				}
			}
			counts := func() (generic, custom int64) {
				_ = conn.QueryRow(ctx, "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'claim'").Scan(&generic, &custom)
				return generic, custom
			}
			g0, _ := counts()
			plan, ms, err := explain("EXECUTE claim(100, 'plans', 30000000)")
			if err != nil {
				return err
			}
			generic, custom := counts()
			shape := "custom"
			if generic > g0 {
				shape = "generic"
			}
			fmt.Printf("| %s | %d | %s | %d / %d | %.1f |\n", mode, pending, shape, generic, custom, ms)
			fmt.Fprintf(&plansOut, "### %s, %d pending\n\n```\n%s```\n\n", mode, pending, plan)
		}
		if err := exec("DEALLOCATE claim"); err != nil {
			return err
		}
	}
	if err := exec("RESET plan_cache_mode"); err != nil {
		return err
	}

	// The drain shape: 100,000 over 1,000 keys.
	if err := truncate(); err != nil {
		return err
	}
	if err := fill(ctx, d, db, tables, 100000, 100); err != nil {
		return err
	}
	if err := exec("ANALYZE " + tables.Outbox); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("## PostgreSQL: the drain shape (100,000 pending over 1,000 keys, ANALYZEd), custom plans")
	fmt.Println()
	fmt.Println("| claim | ms per claim |")
	fmt.Println("|---|---:|")
	plan, ms, err := explain(literal(full, "100", "'plans'", "30000000"))
	if err != nil {
		return err
	}
	fmt.Printf("| full, batch 100 | %.1f |\n", ms)
	fmt.Fprintf(&plansOut, "### drain shape: full claim, batch 100\n\n```\n%s```\n\n", plan)
	plan, ms, err = explain(literal(full, "1000", "'plans'", "30000000"))
	if err != nil {
		return err
	}
	fmt.Printf("| full, batch 1000 | %.1f |\n", ms)
	fmt.Fprintf(&plansOut, "### drain shape: full claim, batch 1000\n\n```\n%s```\n\n", plan)
	// The advance claim for 100 of the keys: rebuild its VALUES list.
	var keys []string
	rows, err := conn.Query(ctx, "SELECT DISTINCT msg_key FROM "+tables.Outbox+" LIMIT 100")
	if err != nil {
		return err
	}
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		keys = append(keys, "'"+k+"'")
	}
	rows.Close()
	advN := advanceSQL(adv, len(keys))
	if strings.Contains(adv, "unnest(") {
		// The keys are one text[] argument.
		var arr []string
		for _, k := range keys {
			arr = append(arr, `"`+strings.Trim(k, "'")+`"`)
		}
		keys = []string{"'{" + strings.Join(arr, ",") + "}'"}
	}
	plan, ms, err = explain(literal(advN, append(keys, "100", "'plans'", "30000000")...))
	if err != nil {
		return err
	}
	fmt.Printf("| advance, 100 keys | %.1f |\n", ms)
	fmt.Fprintf(&plansOut, "### drain shape: advance claim, 100 keys\n\n```\n%s```\n\n", plan)
	fmt.Println()
	fmt.Println(plansOut.String())
	return nil
}

// advanceSQL rewrites an advance claim captured for some number of keys
// for n keys.
func advanceSQL(q string, n int) string {
	start := strings.Index(q, "(VALUES ")
	end := strings.Index(q, ") AS k(msg_key)")
	if start < 0 || end < 0 {
		return q
	}
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d::text)", i+1)
	}
	rest := q[end:]
	// Renumber the parameters after the keys.
	old := strings.Count(q[start:end], "::text")
	for i := 3; i >= 1; i-- {
		rest = strings.ReplaceAll(rest, fmt.Sprintf("$%d", old+i), fmt.Sprintf("$__%d", n+i))
	}
	rest = strings.ReplaceAll(rest, "$__", "$")
	return q[:start] + "(VALUES " + b.String() + rest
}

// literal replaces $1, $2... (PostgreSQL) or ? (MySQL) with values, from
// the highest number down so that $1 does not eat $10.
func literal(q string, vals ...string) string {
	if strings.Contains(q, "$1") {
		for i := len(vals); i >= 1; i-- {
			q = strings.ReplaceAll(q, fmt.Sprintf("$%d", i), vals[i-1])
		}
		return q
	}
	for _, v := range vals {
		q = strings.Replace(q, "?", v, 1)
	}
	return q
}

var mariaTime = regexp.MustCompile(`"r_total_time_ms": ([0-9.]+)`)

func mysqlPlans(ctx context.Context) error {
	d := benchDB("mysql", "")
	counter, tables, drop, err := captureClaims(ctx, d)
	if err != nil {
		return err
	}
	defer drop()
	fmt.Println("## MariaDB: the relay's claim transaction")
	fmt.Println()
	for _, k := range []string{"heads-full", "heads-advance", "lock", "lease"} {
		fmt.Printf("%s:\n\n```sql\n%s\n```\n\n", k, counter.sample(k))
	}
	db, err := d.open(nil)
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Println("| shape | statement | ms (ANALYZE FORMAT=JSON r_total_time_ms) |")
	fmt.Println("|---|---|---:|")
	var out strings.Builder
	for _, shape := range []struct {
		name        string
		n, perKey   int
		withAdvance bool
	}{{"10,000 pending, one per key", 10000, 1, false}, {"100,000 pending over 1,000 keys", 100000, 100, true}} {
		if _, err := db.ExecContext(ctx, "DELETE FROM "+tables.Outbox); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, "DELETE FROM "+tables.Keys); err != nil {
			return err
		}
		if err := fill(ctx, d, db, tables, shape.n, shape.perKey); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, "ANALYZE TABLE "+tables.Outbox); err != nil {
			return err
		}
		run := func(label, q string) error {
			var js string
			if err := db.QueryRowContext(ctx, "ANALYZE FORMAT=JSON "+q).Scan(&js); err != nil {
				return fmt.Errorf("%s: %w", label, err)
			}
			// The largest r_total_time_ms is the statement's.
			var ms float64
			for _, m := range mariaTime.FindAllStringSubmatch(js, -1) {
				var v float64
				fmt.Sscan(m[1], &v)
				ms = max(ms, v)
			}
			fmt.Printf("| %s | %s | %.1f |\n", shape.name, label, ms)
			fmt.Fprintf(&out, "### %s: %s\n\n```json\n%s\n```\n\n", shape.name, label, js)
			return nil
		}
		if err := run("heads (full), batch 100", literal(counter.sample("heads-full"), "100")); err != nil {
			return err
		}
		if shape.withAdvance {
			var keys []string
			rows, err := db.QueryContext(ctx, "SELECT DISTINCT msg_key FROM "+tables.Outbox+" LIMIT 100")
			if err != nil {
				return err
			}
			for rows.Next() {
				var k string
				_ = rows.Scan(&k)
				keys = append(keys, "'"+k+"'")
			}
			rows.Close()
			adv := counter.sample("heads-advance")
			i, j := strings.Index(adv, "msg_key IN ("), strings.Index(adv, ") GROUP BY")
			if i >= 0 && j > i {
				adv = adv[:i] + "msg_key IN (" + strings.Join(keys, ", ") + adv[j:]
			}
			if err := run("heads (advance), 100 keys", literal(adv, "100")); err != nil {
				return err
			}
			var ids []string
			rows, err = db.QueryContext(ctx, "SELECT id FROM "+tables.Outbox+" WHERE seq = 1 LIMIT 100")
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				_ = rows.Scan(&id)
				ids = append(ids, "'"+id+"'")
			}
			rows.Close()
			lock := counter.sample("lock")
			i, j = strings.Index(lock, "o.id IN ("), strings.Index(lock, ") FOR UPDATE")
			if i >= 0 && j > i {
				lock = lock[:i] + "o.id IN (" + strings.Join(ids, ", ") + lock[j:]
			}
			if err := run("lock, 100 heads", lock); err != nil {
				return err
			}
		}
	}
	fmt.Println()
	fmt.Println(out.String())
	_ = os.Stdout.Sync()
	return nil
}
