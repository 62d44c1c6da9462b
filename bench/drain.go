package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

// The drain suites measure how fast a backlog of committed events leaves
// the database for the broker. Each run is its own child process:
//
//  1. prefill (not measured): N events over K keys (order ids), ~300-byte
//     order.created bodies, event i of key i mod K with seq i div K + 1,
//     written in the shape outbox.Store writes them (the outbox rows and
//     the keys' counter rows; bulk INSERTs, or with -prefill-store real
//     Store transactions of 100 events each); then ANALYZE unless
//     -analyze=false;
//  2. measured window: the contender starts (relays, connections) and
//     publishes every event; the window ends when the last one is done:
//     for the relay, confirmed by the broker and marked published in the
//     table (RelayStats.Published); for Watermill, confirmed;
//  3. verified: the queue holds (the topic's offsets add up to) exactly N,
//     every id was confirmed, none twice; the relay's table holds no
//     pending row.
//
// The baseline (raw-amqp091-pipelined / raw-sarama-async) publishes the
// same N bodies from memory with the same keys, -window in flight (the
// relay's default WithMaxInFlight): what the broker can take from one
// client, the bar for a relay.
//
// Besides the usual cost columns, each run records what it asked of the
// database (statements by kind and round trips on the wire, per event:
// dbcount.go) and the CPU the database server, the broker and the whole
// machine spent in the window (proccpu.go).

// drainOpts are the drain suites' flags, passed to the child.
type drainOpts struct {
	rows, keys    int
	window        int // raw publishers' in flight
	peerRows      int // events Watermill's forwarder drains (it is slow)
	relayBatch    int // 0: the relay's default
	relayInFlight int // 0: the relay's default
	analyze       bool
	prefillStore  bool
	dbOptions     string // appended to the PostgreSQL DSN's options
	mysqlParams   string // appended to the MariaDB DSN's parameters
	protoBatch    int    // the prototype's rows per claim
	protoRun      int    // the prototype's rows per key per claim
	protoWorkers  int    // the prototype's concurrent batches
	protoFill     int    // PostgreSQL: the prototype's outbox table fillfactor (0: default)
	protoLean     bool   // the prototype's table without the pending-heads and published indexes
	catchupTail   time.Duration
	// optionsWriters: catchup applies dbOptions / mysqlParams to the
	// writers' connections too.
	optionsWriters bool
}

// optionsFor is what benchDB appends to kind's DSN.
func (o drainOpts) optionsFor(kind string) string {
	if kind == "mysql" {
		return o.mysqlParams
	}
	return o.dbOptions
}

type drainRun struct {
	n        int // events to drain
	run      func(ctx context.Context) error
	verify   func() string
	teardown func()
	counter  *dbCounter
	db       string // "postgres", "mysql" or "" (raw)
}

type drainContender struct {
	name  string
	setup func(ctx context.Context, o drainOpts) (*drainRun, error)
}

var drainSuites = map[string]func() []drainContender{
	"drain-rabbitmq": func() []drainContender { return drainContenders("rabbitmq") },
	"drain-kafka":    func() []drainContender { return drainContenders("kafka") },
}

func drainContenders(sys string) []drainContender {
	raw := drainContender{name: "raw-amqp091-pipelined", setup: rawRabbitDrain}
	if sys == "kafka" {
		raw = drainContender{name: "raw-sarama-async", setup: rawSaramaDrain}
	}
	out := []drainContender{raw}
	for _, db := range []string{"postgres", "mysql"} {
		label := db
		if db == "mysql" {
			label = "mariadb"
		}
		for _, relays := range []int{1, 2} {
			name := "outbox-" + label
			if relays > 1 {
				name += fmt.Sprintf("-%drelays", relays)
			}
			out = append(out, drainContender{name: name, setup: func(ctx context.Context, o drainOpts) (*drainRun, error) {
				return relayDrain(ctx, sys, db, relays, o)
			}})
		}
		out = append(out, drainContender{name: "watermill-sql-" + label, setup: func(ctx context.Context, o drainOpts) (*drainRun, error) {
			return watermillDrain(ctx, sys, db, o)
		}})
		for _, v := range []struct {
			suffix        string
			delete, lease bool
		}{{"", false, false}, {"-delete", true, false}, {"-lease", false, true}, {"-lease-delete", true, true}} {
			out = append(out, drainContender{name: "proto-" + label + v.suffix, setup: func(ctx context.Context, o drainOpts) (*drainRun, error) {
				return protoDrain(ctx, sys, db, protoOpts{batch: o.protoBatch, run: o.protoRun, workers: o.protoWorkers,
					delete: v.delete, lease: v.lease}, o)
			}})
		}
	}
	return out
}

func drainAsContenders(sys string) []contender {
	var out []contender
	for _, c := range drainContenders(sys) {
		out = append(out, contender{name: c.name, setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			return nil, nil, nil, errors.New("drain contender run as a publisher")
		}})
	}
	return out
}

func isDrain(suite string) bool { return strings.HasPrefix(suite, "drain-") }

// drainMessages are the N events of a run: event i is of key i mod k,
// with a fresh id and a ~300-byte order.created body.
func drainMessages(n, k int) ([]broker.Message, error) {
	keys := make([]string, k)
	for i := range keys {
		keys[i] = uuid.NewString()
	}
	msgs := make([]broker.Message, n)
	for i := range msgs {
		m, err := bridge.MessageFor(events.Stamper{}.Stamp(orderEvent(keys[i%k])))
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// idSet records confirmed ids.
type idSet struct {
	mu   sync.Mutex
	seen map[string]struct{}
	dups int64
	n    atomic.Int64 // distinct
}

func newIDSet(n int) *idSet { return &idSet{seen: make(map[string]struct{}, n)} }

func (s *idSet) add(id string) {
	s.mu.Lock()
	if _, ok := s.seen[id]; ok {
		s.dups++
	} else {
		s.seen[id] = struct{}{}
		s.n.Add(1)
	}
	s.mu.Unlock()
}

func (s *idSet) check(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) != n || s.dups > 0 {
		return fmt.Sprintf("no: %d distinct ids confirmed (want %d), %d twice", len(s.seen), n, s.dups)
	}
	return "yes"
}

// recording is a broker that records what the broker confirmed.
type recording struct {
	broker.Broker
	ids *idSet
}

func (b recording) Publish(ctx context.Context, m broker.Message) error {
	err := b.Broker.Publish(ctx, m)
	if err == nil {
		b.ids.add(m.ID)
	}
	return err
}

// waitFor polls done every 2 ms until it returns true, or the deadline.
func waitFor(ctx context.Context, what string, d time.Duration, progress func() (int64, int64)) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(d)
	for {
		got, want := progress()
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d after %v", what, got, want, d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

const drainDeadlineFor = 15 * time.Minute

// brokerTarget is a run's destination: a fresh RabbitMQ exchange and
// queue, or a fresh Kafka topic, and how to count what it holds.
type brokerTarget struct {
	rabbit   *rabbitFixture
	topic    string
	admin    sarama.Client
	holds    func() (int64, error)
	teardown func()
}

func newBrokerTarget(sys string) (*brokerTarget, error) {
	if sys == "rabbitmq" {
		f, err := newRabbitFixture()
		if err != nil {
			return nil, err
		}
		return &brokerTarget{rabbit: f, teardown: f.teardown, holds: func() (int64, error) {
			ch, err := f.admin.Channel()
			if err != nil {
				return 0, err
			}
			defer ch.Close()
			q, err := ch.QueueDeclarePassive(f.queue, true, false, false, false, nil)
			return int64(q.Messages), err
		}}, nil
	}
	topic := "bench." + uuid.NewString()[:8]
	admin, err := sarama.NewClient(kafkaAddrs(), sarama.NewConfig())
	if err != nil {
		return nil, err
	}
	if _, err := admin.Partitions(topic); err != nil { // auto-creates it
		_ = admin.Close()
		return nil, err
	}
	return &brokerTarget{topic: topic, admin: admin, teardown: func() { _ = admin.Close() }, holds: func() (int64, error) {
		var total int64
		for p := range int32(kafkaPartitions) {
			off, err := admin.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				return 0, err
			}
			total += off
		}
		return total, nil
	}}, nil
}

func (t *brokerTarget) verify(n int) string {
	got, err := t.holds()
	if err != nil {
		return "error: " + err.Error()
	}
	if got != int64(n) {
		return fmt.Sprintf("no: the broker holds %d, want %d", got, n)
	}
	return "yes"
}

// ourBroker opens our adapter to the target.
func (t *brokerTarget) ourBroker(ctx context.Context) (broker.Broker, error) {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	if t.rabbit != nil {
		cfg.Addresses, cfg.Exchange = []string{rabbitAddr()}, t.rabbit.exchange
		return rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(quiet()))
	}
	cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, kafkaAddrs(), t.topic
	return kafka.New(ctx, cfg, kafka.WithLogger(quiet()))
}

// rawRabbitDrain publishes the bodies on one confirm-mode channel, window
// in flight.
func rawRabbitDrain(ctx context.Context, o drainOpts) (*drainRun, error) {
	msgs, err := drainMessages(o.rows, o.keys)
	if err != nil {
		return nil, err
	}
	t, err := newBrokerTarget("rabbitmq")
	if err != nil {
		return nil, err
	}
	ids := newIDSet(len(msgs))
	var conn *amqp.Connection
	return &drainRun{n: len(msgs), run: func(ctx context.Context) error {
		c, ch, err := rawChannel()
		if err != nil {
			return err
		}
		conn = c
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, o.window))
		sem := make(chan struct{}, o.window)
		done := make(chan error, 1)
		go func() {
			// Confirms arrive in publishing order (delivery tags 1, 2, ...).
			var i int
			for c := range confirms {
				<-sem
				if !c.Ack {
					done <- fmt.Errorf("nack of delivery %d", c.DeliveryTag)
					return
				}
				ids.add(msgs[c.DeliveryTag-1].ID)
				if i++; i == len(msgs) {
					done <- nil
					return
				}
			}
			done <- errors.New("channel closed")
		}()
		for _, m := range msgs {
			sem <- struct{}{}
			if err := ch.PublishWithContext(ctx, t.rabbit.exchange, m.Name, true, false, amqp.Publishing{ContentType: m.ContentType,
				DeliveryMode: amqp.Persistent, MessageId: m.ID, Type: m.Name, Timestamp: m.Time, Body: m.Body}); err != nil {
				return err
			}
		}
		return <-done
	}, verify: func() string {
		if v := ids.check(len(msgs)); v != "yes" {
			return v
		}
		return t.verify(len(msgs))
	}, teardown: func() {
		if conn != nil {
			_ = conn.Close()
		}
		t.teardown()
	}}, nil
}

// rawSaramaDrain publishes the bodies through one AsyncProducer (acks=all,
// idempotent), window in flight, keyed like the outbox's messages.
func rawSaramaDrain(ctx context.Context, o drainOpts) (*drainRun, error) {
	msgs, err := drainMessages(o.rows, o.keys)
	if err != nil {
		return nil, err
	}
	t, err := newBrokerTarget("kafka")
	if err != nil {
		return nil, err
	}
	ids := newIDSet(len(msgs))
	var prod sarama.AsyncProducer
	return &drainRun{n: len(msgs), run: func(ctx context.Context) error {
		p, err := sarama.NewAsyncProducer(kafkaAddrs(), durableSarama())
		if err != nil {
			return err
		}
		prod = p
		sem := make(chan struct{}, o.window)
		done := make(chan error, 2)
		var n atomic.Int64
		go func() {
			for m := range prod.Successes() {
				<-sem
				ids.add(m.Metadata.(string))
				if n.Add(1) == int64(len(msgs)) {
					done <- nil
				}
			}
		}()
		go func() {
			for e := range prod.Errors() {
				done <- e.Err
			}
		}()
		for _, m := range msgs {
			sem <- struct{}{}
			prod.Input() <- &sarama.ProducerMessage{Topic: t.topic, Key: sarama.StringEncoder(m.Key), Value: sarama.ByteEncoder(m.Body),
				Headers: headers(m.ID), Metadata: m.ID}
		}
		return <-done
	}, verify: func() string {
		if prod != nil {
			prod.AsyncClose()
			prod = nil
		}
		if v := ids.check(len(msgs)); v != "yes" {
			return v
		}
		return t.verify(len(msgs))
	}, teardown: func() {
		if prod != nil {
			prod.AsyncClose()
		}
		t.teardown()
	}}, nil
}

// dbConn is a bench database: driver, DSN, dialect, identifier quoting.
type dbConn struct {
	kind   string // "postgres" or "mysql"
	driver string
	dsn    string
}

// benchDB is the server of kind: PostgreSQL (DATABASE_URL) with
// extraOptions added to its run-time options ("-c name=value ..."), or
// MariaDB (MARIADB_DSN) with extraOptions added to its parameters
// ("name=value&...": go-sql-driver/mysql sets unknown ones as session
// variables).
func benchDB(kind, extraOptions string) dbConn {
	if kind == "mysql" {
		dsn := os.Getenv("MARIADB_DSN")
		if dsn == "" {
			dsn = "root@tcp(127.0.0.1:3306)/test"
		}
		if extraOptions != "" {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + extraOptions
		}
		return dbConn{kind: kind, driver: "mysql", dsn: dsn}
	}
	dsn := databaseURL()
	if extraOptions != "" {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "options=" + strings.ReplaceAll(strings.ReplaceAll(extraOptions, " ", "%20"), "=", "%3D")
	}
	return dbConn{kind: kind, driver: "pgx", dsn: dsn}
}

func (d dbConn) dialect() outbox.Dialect {
	if d.kind == "mysql" {
		return outbox.MySQL
	}
	return outbox.Postgres
}

func (d dbConn) quote(table string) string {
	if d.kind == "mysql" {
		return "`" + table + "`"
	}
	return `"` + table + `"`
}

func (d dbConn) label() string {
	if d.kind == "mysql" {
		return "MariaDB (MARIADB_DSN)"
	}
	return "PostgreSQL at " + databaseHost() + " (DATABASE_URL)"
}

func (d dbConn) open(c *dbCounter) (*sql.DB, error) {
	db, err := openCounted(d.driver, d.dsn, c)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%s: %w", d.label(), err)
	}
	return db, nil
}

// prefillOutbox writes msgs as outbox.Store would (see the suite's doc).
// With o.prefillStore it writes through store (else store may be nil).
func prefillOutbox(ctx context.Context, d dbConn, db *sql.DB, tables outbox.Tables, store *outbox.Store, msgs []broker.Message, o drainOpts) error {
	if o.prefillStore {
		const perTx = 100
		for i := 0; i < len(msgs); i += perTx {
			err := store.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
				for _, m := range msgs[i:min(i+perTx, len(msgs))] {
					if err := store.Publish(ctx, m); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	} else {
		// Rows in insertion order get increasing created_at and
		// next_attempt_at (1 ms apart, the last one now), as writers
		// committing one after the other would leave them.
		const perStmt = 1000
		n := len(msgs)
		for i := 0; i < n; i += perStmt {
			var sb strings.Builder
			var args []any
			sb.WriteString("INSERT INTO " + tables.Outbox + " (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at) VALUES ")
			for j := i; j < min(i+perStmt, n); j++ {
				m := msgs[j]
				if j > i {
					sb.WriteString(", ")
				}
				ago := n - 1 - j
				seq := j/o.keys + 1
				if d.kind == "mysql" {
					sb.WriteString("(?, ?, ?, ?, ?, ?, NULL, ?, UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND, UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND)")
					args = append(args, m.ID, m.Name, m.Key, seq, m.Body, m.ContentType, m.Time.UTC().Format("2006-01-02 15:04:05.000000"), ago*1000, ago*1000)
				} else {
					p := len(args)
					fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, NULL, $%d, now() - $%d::int * interval '1 millisecond', now() - $%d::int * interval '1 millisecond')",
						p+1, p+2, p+3, p+4, p+5, p+6, p+7, p+8, p+8)
					args = append(args, m.ID, m.Name, m.Key, seq, m.Body, m.ContentType, m.Time.UTC(), ago)
				}
			}
			if _, err := db.ExecContext(ctx, sb.String(), args...); err != nil {
				return fmt.Errorf("prefill: %w", err)
			}
		}
		last := map[string]int{}
		var keys []string
		for j, m := range msgs {
			if _, ok := last[m.Key]; !ok {
				keys = append(keys, m.Key)
			}
			last[m.Key] = j/o.keys + 1
		}
		var sb strings.Builder
		var args []any
		sb.WriteString("INSERT INTO " + tables.Keys + " (msg_key, last_seq) VALUES ")
		for i, k := range keys {
			if i > 0 {
				sb.WriteString(", ")
			}
			if d.kind == "mysql" {
				sb.WriteString("(?, ?)")
			} else {
				fmt.Fprintf(&sb, "($%d, $%d)", 2*i+1, 2*i+2)
			}
			args = append(args, k, last[k])
		}
		if _, err := db.ExecContext(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("prefill keys: %w", err)
		}
	}
	if o.analyze {
		stmt := "ANALYZE " + tables.Outbox + ", " + tables.Keys
		if d.kind == "mysql" {
			stmt = "ANALYZE TABLE " + tables.Outbox + ", " + tables.Keys
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("analyze: %w", err)
		}
	}
	return nil
}

// relayDrain drains the prefilled outbox with relays (each with its own
// Store, pool and broker connection, as separate processes would have).
func relayDrain(ctx context.Context, sys, kind string, relays int, o drainOpts) (*drainRun, error) {
	d := benchDB(kind, o.optionsFor(kind))
	counter := newDBCounter()
	msgs, err := drainMessages(o.rows, o.keys)
	if err != nil {
		return nil, err
	}
	prefix := "bench_" + uuid.NewString()[:8] + "_"
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
	var rs []*outbox.Relay
	closeRelays := func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, r := range rs {
			_ = r.Close(cctx)
		}
		rs = nil
	}
	opts := []outbox.RelayOption{outbox.WithLogger(quiet())}
	if o.relayBatch > 0 {
		opts = append(opts, outbox.WithBatchSize(o.relayBatch))
	}
	if o.relayInFlight > 0 {
		opts = append(opts, outbox.WithMaxInFlight(o.relayInFlight))
	}
	return &drainRun{n: len(msgs), counter: counter, db: kind, run: func(ctx context.Context) error {
		for range relays {
			db, err := d.open(counter)
			if err != nil {
				return err
			}
			store, err := outbox.New(db, d.dialect(), outbox.WithTables(tables))
			if err != nil {
				return err
			}
			b, err := t.ourBroker(ctx)
			if err != nil {
				return err
			}
			cleanup = append(cleanup, func() { _ = db.Close() }, func() { _ = b.Close(context.Background()) })
			r, err := outbox.NewRelay(store, recording{b, ids}, opts...)
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		cleanup = append(cleanup, closeRelays)
		return waitFor(ctx, "published and marked", drainDeadlineFor, func() (int64, int64) {
			var n int64
			for _, r := range rs {
				n += r.Stats().Published
			}
			return n, int64(len(msgs))
		})
	}, verify: func() string {
		closeRelays()
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

// watermillDrain drains Watermill's SQL table with its forwarder: the
// events were stored by watermill-sql's publisher wrapped in the
// forwarder's envelope (1,000 per INSERT, not measured).
func watermillDrain(ctx context.Context, sys, kind string, o drainOpts) (*drainRun, error) {
	d := benchDB(kind, o.optionsFor(kind))
	counter := newDBCounter()
	n := min(o.rows, o.peerRows)
	msgs, err := drainMessages(n, o.keys)
	if err != nil {
		return nil, err
	}
	db, err := d.open(counter)
	if err != nil {
		return nil, err
	}
	fwdTopic := "bench_" + uuid.NewString()[:8] + "_fwd"
	var cleanup []func()
	teardown := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	cleanup = append(cleanup, func() {
		for _, t := range []string{"watermill_" + fwdTopic, "watermill_offsets_" + fwdTopic} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + d.quote(t))
		}
		_ = db.Close()
	})
	logger := watermill.NopLogger{}
	var schema wmsql.SchemaAdapter = wmsql.DefaultPostgreSQLSchema{}
	var offsets wmsql.OffsetsAdapter = wmsql.DefaultPostgreSQLOffsetsAdapter{}
	if kind == "mysql" {
		schema, offsets = wmsql.DefaultMySQLSchema{}, wmsql.DefaultMySQLOffsetsAdapter{}
	}
	sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromStdSQL(db), wmsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: offsets, InitializeSchema: true}, logger)
	if err == nil {
		err = sub.SubscribeInitialize(fwdTopic)
	}
	var pub message.Publisher
	if err == nil {
		pub, err = wmsql.NewPublisher(wmsql.BeginnerFromStdSQL(db), wmsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	}
	if err != nil {
		teardown()
		return nil, err
	}
	fpub := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	for i := 0; i < len(msgs); i += 1000 {
		var batch []*message.Message
		for _, m := range msgs[i:min(i+1000, len(msgs))] {
			wm := message.NewMessage(m.ID, m.Body)
			wm.Metadata.Set("key", m.Key)
			batch = append(batch, wm)
		}
		if err := fpub.Publish("orders.events", batch...); err != nil {
			teardown()
			return nil, fmt.Errorf("prefill: %w", err)
		}
	}
	if o.analyze {
		stmt := "ANALYZE " + d.quote("watermill_"+fwdTopic)
		if kind == "mysql" {
			stmt = "ANALYZE TABLE " + d.quote("watermill_"+fwdTopic)
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			teardown()
			return nil, err
		}
	}
	t, err := newBrokerTarget(sys)
	if err != nil {
		teardown()
		return nil, err
	}
	cleanup = append(cleanup, t.teardown)
	ids := newIDSet(len(msgs))
	var stopFwd func()
	return &drainRun{n: len(msgs), counter: counter, db: kind, run: func(ctx context.Context) error {
		var out message.Publisher
		if sys == "rabbitmq" {
			cfg := wmamqp.NewDurablePubSubConfig(rabbitURL(), nil)
			cfg.Exchange.Type = "topic"
			cfg.Exchange.GenerateName = func(string) string { return t.rabbit.exchange }
			cfg.Publish.GenerateRoutingKey = func(string) string { return "order.created" }
			cfg.Publish.ConfirmDelivery = true
			p, err := wmamqp.NewPublisher(cfg, logger)
			if err != nil {
				return err
			}
			out = p
		} else {
			p, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: kafkaAddrs(), Marshaler: wmkafka.NewWithPartitioningMarshaler(
				func(_ string, m *message.Message) (string, error) { return m.Metadata.Get("key"), nil }),
				OverwriteSaramaConfig: durableWatermill()}, logger)
			if err != nil {
				return err
			}
			out = topicOverride{p, t.topic}
		}
		fw, err := forwarder.NewForwarder(sub, recordingWM{out, ids}, logger, forwarder.Config{ForwarderTopic: fwdTopic})
		if err != nil {
			return err
		}
		runCtx, stop := context.WithCancel(context.Background())
		go func() { _ = fw.Run(runCtx) }()
		stopFwd = func() { stop(); _ = fw.Close(); _ = out.Close() }
		cleanup = append(cleanup, func() {
			if stopFwd != nil {
				stopFwd()
			}
		})
		return waitFor(ctx, "forwarded", drainDeadlineFor, func() (int64, int64) { return ids.n.Load(), int64(len(msgs)) })
	}, verify: func() string {
		if stopFwd != nil {
			stopFwd()
			stopFwd = nil
		}
		if v := ids.check(len(msgs)); v != "yes" {
			return v
		}
		return t.verify(len(msgs))
	}, teardown: teardown}, nil
}

// recordingWM records what Watermill's output publisher confirmed.
type recordingWM struct {
	message.Publisher
	ids *idSet
}

func (p recordingWM) Publish(topic string, msgs ...*message.Message) error {
	err := p.Publisher.Publish(topic, msgs...)
	if err == nil {
		for _, m := range msgs {
			p.ids.add(m.UUID)
		}
	}
	return err
}

// runDrainWorker runs one drain contender in this process.
func runDrainWorker(name string, round int, o drainOpts, profDir string) result {
	suite, cname, _ := strings.Cut(name, "/")
	res := result{Suite: suite, Contender: cname, Publishers: 1, Round: round, Verified: "no"}
	var dc *drainContender
	for _, x := range drainSuites[suite]() {
		if x.name == cname {
			dc = &x
		}
	}
	if dc == nil {
		res.Err = "unknown contender"
		return res
	}
	ctx := context.Background()
	run, err := dc.setup(ctx, o)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer run.teardown()
	bnames, bpids := brokerProcesses(suite)
	before := run.counter.snapshot()
	stopProfile := cpuProfile(profilePath(profDir, res))
	sm := startServerMeter(run.db, bnames, bpids)
	m := startMeter()
	runErr := run.run(ctx)
	elapsed := m.stop(&res, int64(run.n))
	sm.stop(&res, int64(run.n))
	stopProfile()
	res.DBStmtsPer, res.DBTurnsPer, res.DBKinds = perEvent(before, run.counter.snapshot(), int64(run.n))
	if runErr != nil {
		res.Err = runErr.Error()
		return res
	}
	res.N, res.Seconds, res.MsgsPerSec = int64(run.n), elapsed.Seconds(), float64(run.n)/elapsed.Seconds()
	res.Verified = run.verify()
	res.PeakRSSKB = peakRSS()
	return res
}
