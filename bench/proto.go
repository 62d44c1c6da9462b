package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/outbox"
)

// The proto-* drain contenders are not the library: they answer whether a
// polling relay on the same tables can drain at broker speed, by running
// the statements proposed for the outbox's next relay against the same
// prefilled rows, publishing through a raw pipelined client (in order, as
// the relay would through an ordered asynchronous publish). Each of
// -proto-workers workers loops:
//
//	BEGIN
//	claim: up to -proto-batch rows, in runs: the due heads (pending, due,
//	       the row before them in their key not pending) in next_attempt_at
//	       order, locked FOR UPDATE SKIP LOCKED, each with the key's
//	       following pending rows (at most -proto-run per key), locked
//	       (MariaDB: SKIP LOCKED, the run ending at a row it skipped);
//	       the row lock is the lease (no lease columns written)
//	publish the rows in order, all in flight at once; wait for the confirms
//	settle: UPDATE ... SET state = 1 (or, -delete, DELETE) WHERE id = ANY(...)
//	COMMIT
//
// PostgreSQL claims in one statement (LATERAL). MariaDB has no LATERAL and
// its locking reads see the latest rows while a subquery reads the
// statement's snapshot, so it claims in three: the heads, locked SKIP
// LOCKED; their runs, locked; and a check on a fresh snapshot that no
// head has a pending predecessor (dropping, unpublished, any that does).
// Batch size and run length are literals in the SQL text, so that a
// cached generic plan is the custom plan.
//
// What it leaves out: retries and backoff (a failed batch is rolled back
// and claimed again), poison rows, dead letters, and the fate of a run
// whose middle message fails alone (see the design notes in README.md).

type protoOpts struct {
	batch, run, workers int
	delete              bool
	// lease: commit a lease on the claimed rows (lease_owner, lease_until,
	// attempts + 1) before publishing, as today's relay does, instead of
	// holding the row locks while publishing; the settle is then its own
	// statement.
	lease bool
}

type protoRow struct {
	id, name, key, contentType string
	seq                        int64
	body                       []byte
	at                         time.Time
}

// orderedPublisher sends a batch in order without waiting, and returns
// a wait for all of its confirms.
type orderedPublisher interface {
	send(ctx context.Context, rows []protoRow) (wait func() error, err error)
	close()
}

type rabbitOrdered struct {
	mu       sync.Mutex
	conn     *amqp.Connection
	ch       *amqp.Channel
	exchange string
}

func newRabbitOrdered(exchange string) (*rabbitOrdered, error) {
	conn, ch, err := rawChannel()
	if err != nil {
		return nil, err
	}
	return &rabbitOrdered{conn: conn, ch: ch, exchange: exchange}, nil
}

func (p *rabbitOrdered) send(ctx context.Context, rows []protoRow) (func() error, error) {
	dcs := make([]*amqp.DeferredConfirmation, 0, len(rows))
	p.mu.Lock()
	for _, r := range rows {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, r.name, true, false, amqp.Publishing{
			ContentType: r.contentType, DeliveryMode: amqp.Persistent, MessageId: r.id, Type: r.name, Timestamp: r.at, Body: r.body})
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		dcs = append(dcs, dc)
	}
	p.mu.Unlock()
	return func() error {
		for _, dc := range dcs {
			ok, err := dc.WaitContext(ctx)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("nack")
			}
		}
		return nil
	}, nil
}

func (p *rabbitOrdered) close() { _ = p.conn.Close() }

type kafkaOrdered struct {
	mu    sync.Mutex
	prod  sarama.AsyncProducer
	topic string
	loops sync.WaitGroup
}

type kafkaBatch struct {
	wg  sync.WaitGroup
	err atomic.Value
}

func newKafkaOrdered(topic string) (*kafkaOrdered, error) {
	prod, err := sarama.NewAsyncProducer(kafkaAddrs(), durableSarama())
	if err != nil {
		return nil, err
	}
	p := &kafkaOrdered{prod: prod, topic: topic}
	p.loops.Go(func() {
		for m := range prod.Successes() {
			m.Metadata.(*kafkaBatch).wg.Done()
		}
	})
	p.loops.Go(func() {
		for e := range prod.Errors() {
			b := e.Msg.Metadata.(*kafkaBatch)
			b.err.CompareAndSwap(nil, e.Err)
			b.wg.Done()
		}
	})
	return p, nil
}

func (p *kafkaOrdered) send(ctx context.Context, rows []protoRow) (func() error, error) {
	b := &kafkaBatch{}
	b.wg.Add(len(rows))
	p.mu.Lock()
	for _, r := range rows {
		p.prod.Input() <- &sarama.ProducerMessage{Topic: p.topic, Key: sarama.StringEncoder(r.key), Value: sarama.ByteEncoder(r.body),
			Headers: headers(r.id), Metadata: b}
	}
	p.mu.Unlock()
	return func() error {
		b.wg.Wait()
		if err, _ := b.err.Load().(error); err != nil {
			return err
		}
		return nil
	}, nil
}

func (p *kafkaOrdered) close() { p.prod.AsyncClose(); p.loops.Wait() }

// protoRelay is the prototype's loop over one table.
type protoRelay struct {
	d                dbConn
	db               *sql.DB
	t                outbox.Tables
	o                protoOpts
	pub              orderedPublisher
	ids              *idSet
	published        atomic.Int64
	claimSQL, settle string
	leaseSQL         string
	headsSQL, runSQL string // MariaDB
	verifySQL        string // MariaDB, without its IN list
}

func newProtoRelay(d dbConn, db *sql.DB, t outbox.Tables, o protoOpts, pub orderedPublisher, ids *idSet) *protoRelay {
	p := &protoRelay{d: d, db: db, t: t, o: o, pub: pub, ids: ids}
	T := t.Outbox
	cols := "id, name, msg_key, seq, body, content_type, occurred_at"
	if d.kind == "mysql" {
		cols = "id, name, msg_key, seq, body, content_type, DATE_FORMAT(occurred_at, '%Y-%m-%d %H:%i:%s.%f')"
		// The LIMIT is filled in per claim (see claim).
		p.headsSQL = `SELECT o.msg_key, o.seq FROM ` + T + ` o
WHERE o.state = 0 AND o.next_attempt_at <= UTC_TIMESTAMP(6) AND (o.lease_until IS NULL OR o.lease_until <= UTC_TIMESTAMP(6))
  AND NOT EXISTS (SELECT 1 FROM ` + T + ` p WHERE p.msg_key = o.msg_key AND p.seq = o.seq - 1 AND p.state = 0)
ORDER BY o.next_attempt_at LIMIT %d FOR UPDATE SKIP LOCKED`
		// FORCE INDEX: each range on (msg_key, seq) exactly, not a scan of
		// the pending-rows index across other keys (whose locks a blocking
		// read would wait for: deadlocks between workers). SKIP LOCKED: a
		// row another worker's head scan holds for a moment ends the run
		// there (the check in claim keeps runs contiguous).
		p.runSQL = `SELECT ` + cols + ` FROM ` + T + ` FORCE INDEX (` + indexOf(T, "key_seq") + `) WHERE state = 0 AND (RANGES) ORDER BY msg_key, seq FOR UPDATE SKIP LOCKED` // cols hold % signs
		p.verifySQL = `SELECT msg_key, seq FROM ` + T + ` WHERE state = 0 AND (msg_key, seq) IN (%s)`
		p.settle = `UPDATE ` + T + ` SET state = 1, published_at = UTC_TIMESTAMP(6) WHERE id IN (%s)`
		if o.delete {
			p.settle = `DELETE FROM ` + T + ` WHERE id IN (%s)`
		}
		p.leaseSQL = `UPDATE ` + T + ` SET lease_owner = 'proto', lease_until = UTC_TIMESTAMP(6) + INTERVAL 30 SECOND, attempts = attempts + 1 WHERE id IN (%s)`
		return p
	}
	p.claimSQL = fmt.Sprintf(`SELECT r.id, r.name, r.msg_key, r.seq, r.body, r.content_type, r.occurred_at
FROM (SELECT o.msg_key, o.seq FROM %[1]s o
      WHERE o.state = 0 AND o.next_attempt_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
        AND NOT EXISTS (SELECT 1 FROM %[1]s p WHERE p.msg_key = o.msg_key AND p.seq = o.seq - 1 AND p.state = 0)
      ORDER BY o.next_attempt_at LIMIT %[2]d FOR UPDATE SKIP LOCKED) h
CROSS JOIN LATERAL (SELECT x.%[4]s FROM %[1]s x
      WHERE x.msg_key = h.msg_key AND x.seq >= h.seq AND x.state = 0 ORDER BY x.seq LIMIT %[3]d FOR UPDATE) r
LIMIT %[2]d`, T, o.batch, o.run, strings.ReplaceAll(cols, ", ", ", x."))
	p.settle = `UPDATE ` + T + ` SET state = 1, published_at = now() WHERE id = ANY($1)`
	if o.delete {
		p.settle = `DELETE FROM ` + T + ` WHERE id = ANY($1)`
	}
	p.leaseSQL = `UPDATE ` + T + ` SET lease_owner = 'proto', lease_until = now() + interval '30 seconds', attempts = attempts + 1 WHERE id = ANY($1)`
	return p
}

func scanProto(rs *sql.Rows) ([]protoRow, error) {
	defer rs.Close()
	var out []protoRow
	for rs.Next() {
		var r protoRow
		var at any
		if err := rs.Scan(&r.id, &r.name, &r.key, &r.seq, &r.body, &r.contentType, &at); err != nil {
			return nil, err
		}
		switch v := at.(type) {
		case time.Time:
			r.at = v
		case []byte:
			r.at, _ = time.Parse("2006-01-02 15:04:05.000000", string(v))
		case string:
			r.at, _ = time.Parse("2006-01-02 15:04:05.000000", v)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// indexOf names an index of an outbox table as outbox's DDL does.
func indexOf(table, suffix string) string {
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		table = table[i+1:]
	}
	return table + "_" + suffix
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// claim locks the next runs in tx and returns them in publishing order:
// grouped by key, each key's rows by seq. heads is how many heads MariaDB
// asks for (PostgreSQL stops taking heads once the batch is full).
func (p *protoRelay) claim(ctx context.Context, tx *sql.Tx, heads int) ([]protoRow, error) {
	var rows []protoRow
	if p.d.kind != "mysql" {
		rs, err := tx.QueryContext(ctx, p.claimSQL)
		if err != nil {
			return nil, err
		}
		if rows, err = scanProto(rs); err != nil {
			return nil, err
		}
	} else {
		// 1. heads, locked.
		rs, err := tx.QueryContext(ctx, fmt.Sprintf(p.headsSQL, heads))
		if err != nil {
			return nil, err
		}
		head := map[string]int64{}
		var keys []any
		for rs.Next() {
			var k string
			var s int64
			if err := rs.Scan(&k, &s); err != nil {
				rs.Close()
				return nil, err
			}
			head[k] = s
			keys = append(keys, k)
		}
		if err := errors.Join(rs.Err(), rs.Close()); err != nil || len(keys) == 0 {
			return nil, err
		}
		// 2. a fresh snapshot: a head whose predecessor is still pending is
		// not one (it was read from the locking read's newer rows).
		var pairs []string
		var args []any
		for _, k := range keys {
			pairs = append(pairs, "(?, ?)")
			args = append(args, k, head[k.(string)]-1)
		}
		rs, err = tx.QueryContext(ctx, fmt.Sprintf(p.verifySQL, strings.Join(pairs, ", ")), args...)
		if err != nil {
			return nil, err
		}
		for rs.Next() {
			var k string
			var s int64
			if err := rs.Scan(&k, &s); err != nil {
				rs.Close()
				return nil, err
			}
			delete(head, k)
		}
		if err := errors.Join(rs.Err(), rs.Close()); err != nil {
			return nil, err
		}
		// 3. the runs: the next rows of those keys, locked.
		var ranges []string
		args = args[:0]
		for _, k := range keys {
			if h, ok := head[k.(string)]; ok {
				ranges = append(ranges, "(msg_key = ? AND seq >= ? AND seq < ?)")
				args = append(args, k, h, h+int64(p.o.run))
			}
		}
		if len(ranges) == 0 {
			return nil, nil
		}
		rs, err = tx.QueryContext(ctx, strings.Replace(p.runSQL, "RANGES", strings.Join(ranges, " OR "), 1), args...)
		if err != nil {
			return nil, err
		}
		all, err := scanProto(rs)
		if err != nil {
			return nil, err
		}
		per := map[string]int{}
		for _, r := range all {
			h, ok := head[r.key]
			if !ok || r.seq < h || r.seq != h+int64(per[r.key]) || per[r.key] >= p.o.run || len(rows) >= p.o.batch {
				continue
			}
			per[r.key]++
			rows = append(rows, r)
		}
	}
	// Publishing order: keys in order of first appearance, seq within.
	first := map[string]int{}
	for i, r := range rows {
		if _, ok := first[r.key]; !ok {
			first[r.key] = i
		}
	}
	slices.SortStableFunc(rows, func(a, b protoRow) int {
		if a.key != b.key {
			return first[a.key] - first[b.key]
		}
		return int(a.seq - b.seq)
	})
	return rows, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// byIDs runs stmt (the settle or the lease) for rows.
func (p *protoRelay) byIDs(ctx context.Context, db execer, stmt string, rows []protoRow) error {
	if p.d.kind != "mysql" {
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.id
		}
		_, err := db.ExecContext(ctx, stmt, ids)
		return err
	}
	args := make([]any, len(rows))
	for i, r := range rows {
		args[i] = r.id
	}
	_, err := db.ExecContext(ctx, fmt.Sprintf(stmt, placeholders(len(rows))), args...)
	return err
}

// work claims, publishes and settles until target rows are published.
func (p *protoRelay) work(ctx context.Context, target int64) error {
	var opts *sql.TxOptions
	if p.d.kind == "mysql" {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	heads := p.o.batch // MariaDB: adapted to the runs' mean length
	for p.published.Load() < target {
		if err := ctx.Err(); err != nil {
			return err
		}
		tx, err := p.db.BeginTx(ctx, opts)
		if err != nil {
			return err
		}
		rows, err := p.claim(ctx, tx, heads)
		if len(rows) > 0 {
			keys := map[string]bool{}
			for _, r := range rows {
				keys[r.key] = true
			}
			heads = max(1, min(p.o.batch, p.o.batch*len(keys)/len(rows)))
		}
		if err != nil || len(rows) == 0 {
			_ = tx.Rollback()
			if err != nil {
				return fmt.Errorf("claim: %w", err)
			}
			time.Sleep(2 * time.Millisecond) // rows held by the other workers
			continue
		}
		var settleIn execer = tx
		if p.o.lease {
			// The lease commits before the publish; the settle commits alone.
			err = p.byIDs(ctx, tx, p.leaseSQL, rows)
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("lease: %w", err)
			}
			settleIn = p.db
		}
		wait, err := p.pub.send(ctx, rows)
		if err == nil {
			err = wait()
		}
		if err == nil {
			err = p.byIDs(ctx, settleIn, p.settle, rows)
		}
		if !p.o.lease {
			if err == nil {
				err = tx.Commit()
			} else {
				_ = tx.Rollback()
			}
		}
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		for _, r := range rows {
			p.ids.add(r.id)
		}
		p.published.Add(int64(len(rows)))
	}
	return nil
}

// protoDrain is the drain contender running the prototype.
func protoDrain(ctx context.Context, sys, kind string, po protoOpts, o drainOpts) (*drainRun, error) {
	params := o.optionsFor(kind)
	if kind == "mysql" {
		// One round trip per statement instead of prepare, execute, close.
		params = strings.TrimPrefix(params+"&interpolateParams=true", "&")
	}
	d := benchDB(kind, params)
	counter := newDBCounter()
	msgs, err := drainMessages(o.rows, o.keys)
	if err != nil {
		return nil, err
	}
	prefix := "bench_" + fmt.Sprint(time.Now().UnixNano()%1e8) + "_"
	tables := outbox.Tables{Outbox: prefix + "outbox", Keys: prefix + "keys", Inbox: prefix + "inbox"}
	var cleanup []func()
	teardown := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	setupDB, err := d.open(nil)
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() {
		for _, t := range []string{tables.Outbox, tables.Keys, tables.Inbox} {
			_, _ = setupDB.Exec("DROP TABLE IF EXISTS " + d.quote(t))
		}
		_ = setupDB.Close()
	})
	setupStore, err := outbox.New(setupDB, d.dialect(), outbox.WithTables(tables))
	if err == nil {
		err = setupStore.Migrate(ctx)
	}
	if err == nil && o.protoLean {
		// Only the indexes the prototype reads: the primary key, (msg_key,
		// seq) and the due rows'; the pending-heads and published indexes
		// go (each is written on every insert and every state change).
		if kind == "mysql" {
			_, err = setupDB.ExecContext(ctx, "ALTER TABLE "+tables.Outbox+" DROP INDEX "+indexOf(tables.Outbox, "head")+", DROP INDEX "+indexOf(tables.Outbox, "published"))
		} else {
			_, err = setupDB.ExecContext(ctx, "DROP INDEX "+indexOf(tables.Outbox, "head")+", "+indexOf(tables.Outbox, "published"))
		}
	}
	if err == nil && kind == "postgres" && o.protoFill > 0 {
		// Room on each page for a HOT update (no index entries) of the lease.
		_, err = setupDB.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s SET (fillfactor = %d)", tables.Outbox, o.protoFill))
	}
	if err == nil {
		err = prefillOutbox(ctx, d, setupDB, tables, setupStore, msgs, o)
	}
	if err != nil {
		teardown()
		return nil, err
	}
	t, err := newBrokerTarget(sys)
	if err != nil {
		teardown()
		return nil, err
	}
	cleanup = append(cleanup, t.teardown)
	ids := newIDSet(len(msgs))
	var relay *protoRelay
	return &drainRun{n: len(msgs), counter: counter, db: kind, run: func(ctx context.Context) error {
		db, err := d.open(counter)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, func() { _ = db.Close() })
		var pub orderedPublisher
		if t.rabbit != nil {
			pub, err = newRabbitOrdered(t.rabbit.exchange)
		} else {
			pub, err = newKafkaOrdered(t.topic)
		}
		if err != nil {
			return err
		}
		cleanup = append(cleanup, pub.close)
		relay = newProtoRelay(d, db, tables, po, pub, ids)
		errs := make(chan error, po.workers)
		for range po.workers {
			go func() { errs <- relay.work(ctx, int64(len(msgs))) }()
		}
		var first error
		for range po.workers {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}, verify: func() string {
		if v := ids.check(len(msgs)); v != "yes" {
			return v
		}
		rows, _, err := setupStore.Backlog(ctx)
		if err != nil {
			return "error: " + err.Error()
		}
		if rows != 0 {
			return fmt.Sprintf("no: %d rows still pending", rows)
		}
		return t.verify(len(msgs))
	}, teardown: teardown}, nil
}
