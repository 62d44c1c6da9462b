package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

// The crash tests re-execute the test binary as child processes that the
// parent SIGKILLs: childEnv names the role, the other OUTBOX_CHILD_*
// variables the databases, tables and broker.
const childEnv = "OUTBOX_TEST_CHILD"

// childConf is what a child is told through its environment.
type childConf struct {
	Role                     string // writer, relay, consumer
	DBKind, DSN, Prefix      string
	Broker, Addr             string // rabbitmq or kafka; host:port
	Exchange, Queue, Topic   string
	Orders                   int    // writer: orders to commit
	Journal                  string // writer: where the ids of orders rolled back on purpose go
	KillAfter                int    // consumer: SIGKILL itself after this many commits (0: never)
	Consumer                 string // consumer: inbox name
	FailEvery                int    // consumer: fail the first attempt of every n-th event
	LeaseMillis, WriterCount int
}

func (c childConf) env() []string {
	return append(os.Environ(),
		childEnv+"="+c.Role,
		"OUTBOX_CHILD_DB="+c.DBKind, "OUTBOX_CHILD_DSN="+c.DSN, "OUTBOX_CHILD_PREFIX="+c.Prefix,
		"OUTBOX_CHILD_BROKER="+c.Broker, "OUTBOX_CHILD_ADDR="+c.Addr,
		"OUTBOX_CHILD_EXCHANGE="+c.Exchange, "OUTBOX_CHILD_QUEUE="+c.Queue, "OUTBOX_CHILD_TOPIC="+c.Topic,
		"OUTBOX_CHILD_ORDERS="+strconv.Itoa(c.Orders), "OUTBOX_CHILD_JOURNAL="+c.Journal,
		"OUTBOX_CHILD_KILL_AFTER="+strconv.Itoa(c.KillAfter), "OUTBOX_CHILD_CONSUMER="+c.Consumer,
		"OUTBOX_CHILD_FAIL_EVERY="+strconv.Itoa(c.FailEvery),
		"OUTBOX_CHILD_LEASE_MS="+strconv.Itoa(c.LeaseMillis), "OUTBOX_CHILD_WRITERS="+strconv.Itoa(c.WriterCount),
	)
}

func childConfFromEnv(role string) childConf {
	atoi := func(k string) int { n, _ := strconv.Atoi(os.Getenv(k)); return n }
	return childConf{Role: role, DBKind: os.Getenv("OUTBOX_CHILD_DB"), DSN: os.Getenv("OUTBOX_CHILD_DSN"),
		Prefix: os.Getenv("OUTBOX_CHILD_PREFIX"), Broker: os.Getenv("OUTBOX_CHILD_BROKER"), Addr: os.Getenv("OUTBOX_CHILD_ADDR"),
		Exchange: os.Getenv("OUTBOX_CHILD_EXCHANGE"), Queue: os.Getenv("OUTBOX_CHILD_QUEUE"), Topic: os.Getenv("OUTBOX_CHILD_TOPIC"),
		Orders: atoi("OUTBOX_CHILD_ORDERS"), Journal: os.Getenv("OUTBOX_CHILD_JOURNAL"), KillAfter: atoi("OUTBOX_CHILD_KILL_AFTER"),
		Consumer: os.Getenv("OUTBOX_CHILD_CONSUMER"), FailEvery: atoi("OUTBOX_CHILD_FAIL_EVERY"),
		LeaseMillis: atoi("OUTBOX_CHILD_LEASE_MS"), WriterCount: atoi("OUTBOX_CHILD_WRITERS")}
}

// runChild runs a child role and returns its exit code.
func runChild(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := childConfFromEnv(role)
	var err error
	switch role {
	case "writer":
		err = runWriter(c, log)
	case "relay":
		err = runRelayChild(c, log)
	case "consumer":
		err = runConsumer(c, log)
	case "migrate":
		err = runMigrateChild(c)
	case "ordered-consumer":
		err = runOrderedConsumer(c, log)
	default:
		err = fmt.Errorf("unknown child role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 1
	}
	return 0
}

func driverOf(kind string) string {
	return map[string]string{"postgres": "pgx", "mysql": "mysql", "sqlite": "sqlite"}[kind]
}

func (c childConf) store() (*outbox.Store, error) {
	db, err := sql.Open(driverOf(c.DBKind), c.DSN)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(32)
	return outbox.New(db, outbox.Dialect(c.DBKind), outbox.WithTables(outbox.Tables{
		Outbox: c.Prefix + "outbox", Keys: c.Prefix + "keys", Inbox: c.Prefix + "inbox"}))
}

func (c childConf) config() broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Addresses = []string{c.Addr}
	cfg.Exchange, cfg.Topic = c.Exchange, c.Topic
	if c.Broker == "kafka" {
		cfg.Type = broker.Kafka
	}
	return cfg
}

func (c childConf) broker(log *slog.Logger) (broker.Broker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c.Broker == "kafka" {
		return kafka.New(ctx, c.config(), kafka.WithLogger(log))
	}
	return rabbitmq.New(ctx, c.config(), rabbitmq.WithLogger(log), rabbitmq.WithQueue(rabbitmq.Queue{Name: c.Queue}))
}

func (c childConf) relayOpts(log *slog.Logger) []outbox.RelayOption {
	lease := time.Duration(c.LeaseMillis) * time.Millisecond
	if lease == 0 {
		lease = 2 * time.Second
	}
	return []outbox.RelayOption{outbox.WithLease(lease), outbox.WithPublishTimeout(lease * 2 / 5),
		outbox.WithPollInterval(100 * time.Millisecond), outbox.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
		outbox.WithLogger(log)}
}

// runWriter creates c.Orders committed orders from 16 goroutines, each in
// one transaction with its order row and 1 to 3 events published through
// the bus; about one in ten transactions is rolled back on purpose (its
// order id journaled first). A relay runs inside the process.
func runWriter(c childConf, log *slog.Logger) error {
	s, err := c.store()
	if err != nil {
		return err
	}
	b, err := c.broker(log)
	if err != nil {
		return err
	}
	relay, err := outbox.NewRelay(s, b, c.relayOpts(log)...)
	if err != nil {
		return err
	}
	fwd, err := bridge.NewForwarder(s)
	if err != nil {
		return err
	}
	bus := eventbus.New()
	fwd.Attach(bus)
	journal, err := os.OpenFile(c.Journal, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	var jmu sync.Mutex
	orders := c.Prefix + "orders"
	insert := "INSERT INTO " + orders + " (id, events) VALUES (?, ?)"
	if c.DBKind == "postgres" {
		insert = "INSERT INTO " + orders + " (id, events) VALUES ($1, $2)"
	}
	writers := c.WriterCount
	if writers == 0 {
		writers = 16
	}
	var committed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for committed.Load() < int64(c.Orders) {
				orderID, userID := uuid.NewString(), uuid.NewString()
				evs := []events.Event{events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated,
					Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 1, Price: events.Cents(1250)}}, Total: events.Cents(1250)}}
				n := 1 + rand.IntN(3)
				if n >= 2 {
					evs = append(evs, events.OrderStatusUpdated{OrderID: orderID, UserID: userID, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress})
				}
				if n == 3 {
					evs = append(evs, events.OrderCancelled{OrderID: orderID, UserID: userID, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled})
				}
				rollback := rand.IntN(10) == 0
				if rollback {
					jmu.Lock()
					_, err := journal.WriteString(orderID + "\n")
					jmu.Unlock()
					if err != nil {
						errs <- err
						return
					}
				}
				err := s.Transact(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, insert, orderID, len(evs)); err != nil {
						return err
					}
					for _, e := range evs {
						if err := eventbus.Publish(ctx, bus, e); err != nil {
							return err
						}
					}
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case err == nil:
					committed.Add(1)
				case rollback && errors.Is(err, errRollback):
				case retryable(err):
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return errors.Join(relay.Close(ctx), b.Close(ctx), journal.Close())
}

// runRelayChild relays until SIGTERM, then closes gracefully.
func runRelayChild(c childConf, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := c.store()
	if err != nil {
		return err
	}
	b, err := c.broker(log)
	if err != nil {
		return err
	}
	relay, err := outbox.NewRelay(s, b, c.relayOpts(log)...)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return errors.Join(relay.Close(cctx), b.Close(cctx))
}

// runConsumer consumes c.Queue through the inbox of c.Consumer; its
// handler adds one to the counter row in the inbox transaction. With
// KillAfter it SIGKILLs itself right after that many commits, before the
// subscriber acknowledges: the worst moment.
func runConsumer(c childConf, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := c.store()
	if err != nil {
		return err
	}
	in, err := outbox.NewInbox(s, c.Consumer)
	if err != nil {
		return err
	}
	bump := "UPDATE " + c.Prefix + "counter SET n = n + 1 WHERE id = 1"
	var commits atomic.Int64
	var ran sync.Map // ids whose handler ran in the call under way (not skipped as a duplicate)
	h := in.Handler(func(ctx context.Context, d broker.Delivery) error {
		ran.Store(d.ID, true)
		tx, _ := outbox.TxFrom(ctx)
		if _, err := tx.ExecContext(ctx, bump); err != nil {
			return err
		}
		// Fail the first attempt of some events after the write: it must
		// roll back with the inbox row.
		if c.FailEvery > 0 && d.Attempt == 1 && idHash(d.ID)%uint32(c.FailEvery) == 0 {
			return errors.New("forced handler failure")
		}
		return nil
	})
	wrapped := func(ctx context.Context, d broker.Delivery) error {
		ran.Delete(d.ID)
		if err := h(ctx, d); err != nil {
			return err
		}
		if _, committed := ran.LoadAndDelete(d.ID); !committed {
			return nil // a duplicate, acknowledged
		}
		if n := commits.Add(1); c.KillAfter > 0 && n >= int64(c.KillAfter) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // committed, not acknowledged
			select {}
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := rabbitmq.NewSubscriber(sctx, c.config(), rabbitmq.Queue{Name: c.Queue}, wrapped,
		rabbitmq.WithLogger(log), rabbitmq.WithConcurrency(8), rabbitmq.WithPrefetch(64), rabbitmq.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	cctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	return errors.Join(sub.Close(cctx), in.Close(cctx))
}

func idHash(id string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32()
}

// runOrderedConsumer consumes c.Queue with WithConcurrency(16) through the
// inbox of c.Consumer (commit order on); its handler records each event it
// applies in the "applied" table, in the inbox transaction, and fails the
// first attempt of one event in c.FailEvery after that write. With
// KillAfter it SIGKILLs itself right after that many commits, before the
// subscriber acknowledges.
func runOrderedConsumer(c childConf, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := c.store()
	if err != nil {
		return err
	}
	in, err := outbox.NewInbox(s, c.Consumer, outbox.WithInboxLogger(log))
	if err != nil {
		return err
	}
	record := "INSERT INTO " + c.Prefix + "applied (msg_key, seq, event_id) VALUES ($1, $2, $3)"
	var commits atomic.Int64
	var ran sync.Map
	h := in.Handler(func(ctx context.Context, d broker.Delivery) error {
		ran.Store(d.ID, true)
		tx, _ := outbox.TxFrom(ctx)
		if _, err := tx.ExecContext(ctx, record, d.Key, d.Seq, d.ID); err != nil {
			return err
		}
		if c.FailEvery > 0 && d.Attempt == 1 && idHash(d.ID)%uint32(c.FailEvery) == 0 {
			return errors.New("forced handler failure")
		}
		return nil
	})
	wrapped := func(ctx context.Context, d broker.Delivery) error {
		ran.Delete(d.ID)
		if err := h(ctx, d); err != nil {
			return err
		}
		if _, committed := ran.LoadAndDelete(d.ID); !committed {
			return nil
		}
		if n := commits.Add(1); c.KillAfter > 0 && n >= int64(c.KillAfter) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // committed, not acknowledged
			select {}
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := rabbitmq.NewSubscriber(sctx, c.config(), rabbitmq.Queue{Name: c.Queue}, wrapped,
		rabbitmq.WithLogger(log), rabbitmq.WithConcurrency(16), rabbitmq.WithMaxAttempts(20),
		rabbitmq.WithRetryBackoff(10*time.Millisecond, 200*time.Millisecond),
		rabbitmq.WithReconnectBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	cctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	return errors.Join(sub.Close(cctx), in.Close(cctx))
}
