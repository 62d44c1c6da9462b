package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

// The outbox suites measure commit-to-confirmed: one call is one order
// transaction on PostgreSQL (the order row and its order.created event)
// that returns once the broker has confirmed that event. Latency is
// begin-to-confirmed (the transaction itself is about a millisecond).
//
//   - direct: commit the order row, then publish through our adapter (the
//     way without an outbox; a crash in between loses the event);
//   - outbox: the event is stored in the transaction, our relay publishes;
//   - watermill-sql-forwarder: watermill-sql v4's publisher in the
//     transaction, Watermill's forwarder component publishing through
//     watermill-amqp / watermill-kafka, all with their defaults.
func outboxContenders(sys, db string) []contender {
	return []contender{
		outboxContender(sys, db, "direct"),
		outboxContender(sys, db, "outbox"),
		outboxContender(sys, db, "watermill-sql-forwarder"),
	}
}

// workerDB is what the one contender of a worker process asks of its
// database: the writers' statements and the relay's, counted apart (the
// relay has its own pool, as a relay in another process would).
var workerDB struct {
	kind          string
	writer, relay *dbCounter
	store         *outbox.Store // the outbox contenders' store, for the backlog
}

func dbSnapshots() [2]dbSnapshot {
	return [2]dbSnapshot{workerDB.writer.snapshot(), workerDB.relay.snapshot()}
}

// dbPerEvent sets res's database columns from the counters' change since
// before: statements and round trips of writers and relay together, and
// the kinds of each, prefixed "writer " or "relay ".
func dbPerEvent(res *result, before [2]dbSnapshot, n int64) {
	after := dbSnapshots()
	for i, who := range []string{"writer ", "relay "} {
		stmts, turns, kinds := perEvent(before[i], after[i], n)
		res.DBStmtsPer += stmts
		res.DBTurnsPer += turns
		for _, k := range kinds {
			k.Kind = who + k.Kind
			res.DBKinds = append(res.DBKinds, k)
		}
	}
}

func databaseURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// databaseHost names the database server without the URL's credentials.
func databaseHost() string {
	u, err := url.Parse(databaseURL())
	if err != nil {
		return "an unparsable URL"
	}
	return u.Host
}

// confirmations lets a writer wait for the confirm of its event.
type confirmations struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (c *confirmations) expect(id string) chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	c.m[id] = ch
	c.mu.Unlock()
	return ch
}

func (c *confirmations) done(id string) {
	c.mu.Lock()
	ch := c.m[id]
	delete(c.m, id)
	c.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (c *confirmations) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

func (c *confirmations) wait(ctx context.Context, ch chan struct{}, id string) error {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		c.forget(id)
		return fmt.Errorf("event of order %s not confirmed within 30s", id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// confirming signals each message the broker confirmed, by its key (the
// order id: one event per order here).
type confirming struct {
	broker.Broker
	c *confirmations
}

func (b confirming) Publish(ctx context.Context, m broker.Message) error {
	err := b.Broker.Publish(ctx, m)
	if err == nil {
		b.c.done(m.Key)
	}
	return err
}

// confirmingWM does the same for Watermill's output publisher (message
// UUID = order id).
type confirmingWM struct {
	message.Publisher
	c *confirmations
}

func (p confirmingWM) Publish(topic string, msgs ...*message.Message) error {
	err := p.Publisher.Publish(topic, msgs...)
	if err == nil {
		for _, m := range msgs {
			p.c.done(m.UUID)
		}
	}
	return err
}

func orderEvent(orderID string) events.OrderCreated {
	return events.OrderCreated{OrderID: orderID, UserID: "a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d", Status: events.StatusCreated,
		Items: []events.OrderItem{{ProductID: "sku-1001", Quantity: 2, Price: events.Cents(500000)}}, Total: events.Cents(1255000)}
}

// outboxContender wires one way of publishing from a transaction on
// database kind ("postgres" or "mysql") to sys ("rabbitmq" or "kafka").
func outboxContender(sys, kind, name string) contender {
	open := func(dest func() (broker.Broker, message.Publisher, error)) (func(context.Context) error, func(), error) {
		d := benchDB(kind, "")
		workerDB.kind, workerDB.writer, workerDB.relay = kind, newDBCounter(), newDBCounter()
		db, err := d.open(workerDB.writer)
		if err != nil {
			return nil, nil, err
		}
		prefix := "bench_" + uuid.NewString()[:8] + "_"
		orders := prefix + "orders"
		var cleanup []func()
		teardown := func() {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
			for _, t := range []string{orders, prefix + "outbox", prefix + "keys", prefix + "inbox",
				"watermill_" + prefix + "fwd", "watermill_offsets_" + prefix + "fwd"} {
				_, _ = db.Exec("DROP TABLE IF EXISTS " + d.quote(t))
			}
			_ = db.Close()
		}
		ddl, insert := "CREATE TABLE "+orders+" (id TEXT PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now())", "INSERT INTO "+orders+" (id) VALUES ($1)"
		if kind == "mysql" {
			ddl, insert = "CREATE TABLE "+orders+" (id VARCHAR(64) PRIMARY KEY, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))", "INSERT INTO "+orders+" (id) VALUES (?)"
		}
		if _, err := db.Exec(ddl); err != nil {
			teardown()
			return nil, nil, fmt.Errorf("%s: %w", d.label(), err)
		}
		conf := &confirmations{m: map[string]chan struct{}{}}
		b, wmOut, err := dest()
		if err != nil {
			teardown()
			return nil, nil, err
		}
		switch name {
		case "direct":
			cleanup = append(cleanup, func() { _ = b.Close(context.Background()) })
			fwd, err := bridge.NewForwarder(b)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			bus := eventbus.New()
			fwd.Attach(bus)
			return func(ctx context.Context) error {
				id := uuid.NewString()
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, insert, id); err != nil {
					_ = tx.Rollback()
					return err
				}
				if err := tx.Commit(); err != nil {
					return err
				}
				return eventbus.Publish(ctx, bus, orderEvent(id)) // returns after the confirm
			}, teardown, nil

		case "outbox":
			cleanup = append(cleanup, func() { _ = b.Close(context.Background()) })
			tables := outbox.WithTables(outbox.Tables{Outbox: prefix + "outbox", Keys: prefix + "keys", Inbox: prefix + "inbox"})
			store, err := outbox.New(db, d.dialect(), tables)
			if err == nil {
				err = store.Migrate(context.Background())
			}
			if err != nil {
				teardown()
				return nil, nil, err
			}
			workerDB.store = store
			rdb, err := d.open(workerDB.relay)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			cleanup = append(cleanup, func() { _ = rdb.Close() })
			relayStore, err := outbox.New(rdb, d.dialect(), tables)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			// The relay's store is woken by the writers' commits, as a relay
			// sharing the writers' process would be.
			wake := relayStore.Notify
			relay, err := outbox.NewRelay(relayStore, confirming{b, conf}, outbox.WithLogger(quiet()))
			if err != nil {
				teardown()
				return nil, nil, err
			}
			cleanup = append(cleanup, func() { _ = relay.Close(context.Background()) })
			fwd, err := bridge.NewForwarder(store)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			bus := eventbus.New()
			fwd.Attach(bus)
			return func(ctx context.Context) error {
				id := uuid.NewString()
				ch := conf.expect(id)
				err := store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, insert, id); err != nil {
						return err
					}
					return eventbus.Publish(ctx, bus, orderEvent(id))
				})
				if err != nil {
					conf.forget(id)
					return err
				}
				wake()
				return conf.wait(ctx, ch, id)
			}, teardown, nil

		default: // watermill-sql-forwarder
			logger := watermill.NopLogger{}
			fwdTopic := prefix + "fwd"
			var schema wmsql.SchemaAdapter = wmsql.DefaultPostgreSQLSchema{}
			var offsets wmsql.OffsetsAdapter = wmsql.DefaultPostgreSQLOffsetsAdapter{}
			if kind == "mysql" {
				schema, offsets = wmsql.DefaultMySQLSchema{}, wmsql.DefaultMySQLOffsetsAdapter{}
			}
			rdb, err := d.open(workerDB.relay)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			cleanup = append(cleanup, func() { _ = rdb.Close() })
			sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromStdSQL(rdb), wmsql.SubscriberConfig{
				SchemaAdapter: schema, OffsetsAdapter: offsets, InitializeSchema: true}, logger)
			if err != nil {
				teardown()
				return nil, nil, err
			}
			// Create the topic's tables before the writers start.
			initPub, err := wmsql.NewPublisher(wmsql.BeginnerFromStdSQL(db), wmsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
			if err == nil {
				err = sub.SubscribeInitialize(fwdTopic)
			}
			if err != nil {
				teardown()
				return nil, nil, err
			}
			_ = initPub.Close()
			fw, err := forwarder.NewForwarder(sub, confirmingWM{wmOut, conf}, logger, forwarder.Config{ForwarderTopic: fwdTopic})
			if err != nil {
				teardown()
				return nil, nil, err
			}
			runCtx, stop := context.WithCancel(context.Background())
			go func() { _ = fw.Run(runCtx) }()
			<-fw.Running()
			cleanup = append(cleanup, func() { _ = wmOut.Close() }, func() { stop(); _ = fw.Close() })
			return func(ctx context.Context) error {
				id := uuid.NewString()
				ch := conf.expect(id)
				err := func() error {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer func() { _ = tx.Rollback() }()
					if _, err := tx.ExecContext(ctx, insert, id); err != nil {
						return err
					}
					pub, err := wmsql.NewPublisher(wmsql.TxFromStdSQL(tx), wmsql.PublisherConfig{SchemaAdapter: schema}, logger)
					if err != nil {
						return err
					}
					m, err := bridge.MessageFor(events.Stamper{}.Stamp(orderEvent(id)))
					if err != nil {
						return err
					}
					if err := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic}).
						Publish("orders.events", message.NewMessage(id, m.Body)); err != nil {
						return err
					}
					return tx.Commit()
				}()
				if err != nil {
					conf.forget(id)
					return err
				}
				return conf.wait(ctx, ch, id)
			}, teardown, nil
		}
	}

	if sys == "kafka" {
		return kafkaContender(name, func(topic string) (func(context.Context) error, func(), error) {
			return open(func() (broker.Broker, message.Publisher, error) {
				if name == "watermill-sql-forwarder" {
					pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: kafkaAddrs(), Marshaler: wmkafka.DefaultMarshaler{},
						OverwriteSaramaConfig: durableWatermill()}, watermill.NopLogger{})
					if err != nil {
						return nil, nil, err
					}
					return nil, topicOverride{pub, topic}, nil
				}
				cfg := broker.DefaultConfig()
				cfg.Enabled, cfg.Type, cfg.Addresses, cfg.Topic = true, broker.Kafka, kafkaAddrs(), topic
				b, err := kafka.New(context.Background(), cfg, kafka.WithLogger(quiet()))
				return b, nil, err
			})
		})
	}
	return rabbitContender(name, func(f *rabbitFixture) (func(context.Context) error, func(), error) {
		return open(func() (broker.Broker, message.Publisher, error) {
			if name == "watermill-sql-forwarder" {
				cfg := wmamqp.NewDurablePubSubConfig(rabbitURL(), nil)
				cfg.Exchange.Type = "topic"
				cfg.Exchange.GenerateName = func(string) string { return f.exchange }
				cfg.Publish.GenerateRoutingKey = func(string) string { return "order.created" }
				cfg.Publish.ConfirmDelivery = true
				pub, err := wmamqp.NewPublisher(cfg, watermill.NopLogger{})
				return nil, pub, err
			}
			cfg := broker.DefaultConfig()
			cfg.Enabled, cfg.Addresses, cfg.Exchange = true, []string{rabbitAddr()}, f.exchange
			b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(quiet()))
			return b, nil, err
		})
	})
}

// topicOverride sends what the forwarder publishes to the run's topic.
type topicOverride struct {
	message.Publisher
	topic string
}

func (p topicOverride) Publish(_ string, msgs ...*message.Message) error {
	return p.Publisher.Publish(p.topic, msgs...)
}
