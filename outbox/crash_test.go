package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/testenv"
)

// crashOrders is how many committed orders a crash run creates:
// OUTBOX_CRASH_ORDERS, else 300 in the long test tier, 120 by default.
func crashOrders() int {
	if n, err := strconv.Atoi(os.Getenv("OUTBOX_CRASH_ORDERS")); err == nil && n > 0 {
		return n
	}
	return testenv.Count(120, 300)
}

// The crash test of issue 12, on PostgreSQL and MariaDB, with RabbitMQ and
// with Kafka (kfake in this process, children over TCP). A writer process
// commits orders from 16 goroutines (each transaction: the order row and
// its 1-3 events; about 10 % rolled back on purpose), with a relay inside
// it, and is SIGKILLed three times mid-stream; a relay in a second process
// is SIGKILLed once. At the end, counted by event id: every committed
// event reached the broker at least once, no event of a rolled-back
// transaction did, each order's events arrived in order.
//
// Full run: OUTBOX_CRASH_ORDERS=5000 go test -run TestCrash -v ./outbox
func TestCrash(t *testing.T) {
	for _, dbName := range []string{"postgres", "mysql"} {
		for _, brokerName := range []string{"rabbitmq", "kafka"} {
			t.Run(dbName+"/"+brokerName, func(t *testing.T) {
				var db *dbtest.DB
				if dbName == "postgres" {
					db = dbtest.RequirePostgres(t)
				} else {
					db = dbtest.RequireMariaDB(t)
				}
				runCrash(t, db, brokerName, crashOrders())
			})
		}
	}
}

func runCrash(t *testing.T, db *dbtest.DB, brokerName string, n int) {
	newStore(t, db) // migrates
	_, err := db.Exec("CREATE TABLE " + db.Table("orders") + " (id VARCHAR(64) NOT NULL PRIMARY KEY, events INT NOT NULL)")
	require.NoError(t, err)
	dir := t.TempDir()
	conf := childConf{DBKind: db.Kind, DSN: db.DSN, Prefix: db.Prefix, Broker: brokerName,
		Journal: filepath.Join(dir, "rolled-back.txt"), LeaseMillis: 2000}
	read := setupBroker(t, &conf)

	orders := func() int {
		var c int
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+db.Table("orders")).Scan(&c))
		return c
	}
	waitOrders := func(at int) {
		brokertest.WaitFor(t, 120*time.Second, fmt.Sprintf("%d orders committed", at), func() bool { return orders() >= at })
	}
	start := time.Now()
	relay := startChild(t, dir, "relay-1", conf.with("relay", 0))
	writer := startChild(t, dir, "writer-1", conf.with("writer", n))
	kills := []int{n * 20 / 100, n * 45 / 100, n * 70 / 100}
	for i, at := range kills {
		waitOrders(at)
		writer.kill(t)
		t.Logf("writer %d SIGKILLed at %d committed orders", i+1, orders())
		if i == 1 {
			relay.kill(t)
			t.Logf("relay process SIGKILLed at %d committed orders", orders())
			relay = startChild(t, dir, "relay-2", conf.with("relay", 0))
		}
		writer = startChild(t, dir, fmt.Sprintf("writer-%d", i+2), conf.with("writer", n-orders()))
	}
	require.NoError(t, writer.wait(180*time.Second), "last writer")
	committed := orders()
	brokertest.WaitFor(t, 120*time.Second, "outbox drained", func() bool { return count(t, db, "state = 0") == 0 })
	relay.term(t)
	elapsed := time.Since(start)

	arrivals := read()
	c := verify(t, db, arrivals, readJournal(t, conf.Journal))
	t.Logf("%s/%s: %d orders committed, %d rolled back on purpose; %d events committed, %d received (%d unique, %d duplicates), "+
		"lost %d, from rolled-back txs %d, unknown %d, out-of-order keys %d, in %v",
		db.Kind, brokerName, committed, c.rolledBack, c.expected, len(arrivals), c.unique, c.dups, c.lost, c.fromRolledBack, c.unknown, c.outOfOrder,
		elapsed.Round(time.Millisecond))
	assert.Zero(t, c.lost, "lost events")
	assert.Zero(t, c.fromRolledBack, "events of rolled-back transactions")
	assert.Zero(t, c.unknown, "events that are not in the outbox")
	assert.Zero(t, c.outOfOrder, "keys out of order")
	assert.GreaterOrEqual(t, committed, n)
	assert.Positive(t, c.rolledBack)
}

// with returns c for a child of role; n is a writer's order count.
func (c childConf) with(role string, n int) childConf {
	c.Role, c.Orders = role, n
	return c
}

// arrival is one message the broker delivered, in the order of its queue
// or partition.
type arrival struct{ id, key string }

// setupBroker makes a fresh destination for conf and returns how to read
// back everything in it once the children are done.
func setupBroker(t *testing.T, conf *childConf) func() []arrival {
	id := uuid.NewString()[:8]
	if conf.Broker == "kafka" {
		conf.Topic = "det.outbox." + id
		c, err := kfake.NewCluster(kfake.SeedTopics(3, conf.Topic))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		conf.Addr = c.ListenAddrs()[0]
		return func() []arrival { return readKafka(t, c.ListenAddrs(), conf.Topic) }
	}
	conn := requireRabbit(t)
	conf.Addr, conf.Exchange, conf.Queue = rabbitAddr(), "det.outbox."+id, "det.outbox."+id+".q"
	ch, err := conn.Channel()
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(conf.Queue, false, false, false)
		_, _ = ch.QueueDelete(conf.Queue+".retry", false, false, false)
		_, _ = ch.QueueDelete(conf.Queue+".dlq", false, false, false)
		_ = ch.ExchangeDelete(conf.Exchange, false, false)
		_ = ch.Close()
	})
	// Declare the exchange and queue as the adapter does.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, conf.config(), rabbitmq.WithQueue(rabbitmq.Queue{Name: conf.Queue}), rabbitmq.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	require.NoError(t, b.Close(ctx))
	return func() []arrival { return readRabbit(t, ch, conf.Queue) }
}

func rabbitAddr() string {
	if a := os.Getenv("RABBITMQ_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:5672"
}

func requireRabbit(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig("amqp://guest:guest@"+rabbitAddr()+"/", amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		msg := fmt.Sprintf("RabbitMQ is not reachable on %s (%v). Start it with `rabbitmq-server -detached` (or set RABBITMQ_ADDR).", rabbitAddr(), err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// readRabbit takes every message in queue, in queue order.
func readRabbit(t *testing.T, ch *amqp.Channel, queue string) []arrival {
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.Qos(1000, 0, false))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	out := make([]arrival, 0, q.Messages)
	for len(out) < q.Messages {
		select {
		case d := <-deliveries:
			require.NoError(t, d.Ack(false))
			key, _ := d.Headers["test-key"].(string)
			if env, err := events.Decode(d.Body); err == nil {
				key = env.Data.AggregateID()
			}
			out = append(out, arrival{id: d.MessageId, key: key})
		case <-ctx.Done():
			t.Fatalf("read %d of %d messages: %v", len(out), q.Messages, ctx.Err())
		}
	}
	return out
}

// readKafka reads every partition of topic from the start to its high
// watermark, one partition after the other (order is per partition).
func readKafka(t *testing.T, addrs []string, topic string) []arrival {
	var out []arrival
	eachKafkaRecord(t, addrs, topic, func(m *sarama.ConsumerMessage) {
		id := ""
		for _, h := range m.Headers {
			if string(h.Key) == kafka.HeaderID {
				id = string(h.Value)
			}
		}
		out = append(out, arrival{id: id, key: string(m.Key)})
	})
	return out
}

// eachKafkaRecord calls fn with every record of topic, from the start to
// its high watermark, one partition after the other.
func eachKafkaRecord(t *testing.T, addrs []string, topic string, fn func(*sarama.ConsumerMessage)) {
	client, err := sarama.NewClient(addrs, sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	require.NoError(t, err)
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	require.NoError(t, err)
	for _, p := range parts {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		require.NoError(t, err)
		if hwm == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		timeout := time.After(60 * time.Second)
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				fn(m)
				done = m.Offset >= hwm-1
			case <-timeout:
				t.Fatalf("partition %d: timed out before offset %d", p, hwm-1)
			}
		}
		require.NoError(t, pc.Close())
	}
}

func readJournal(t *testing.T, path string) map[string]bool {
	out := map[string]bool{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return out
	}
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out[l] = true
		}
	}
	return out
}

type counts struct {
	expected, unique, dups, lost, fromRolledBack, unknown, outOfOrder, rolledBack int
}

// verify checks the arrivals against the outbox and orders tables: every
// order's events are all in the outbox (the order row and its events
// committed together), every outbox row was published and arrived, per key
// in seq order (first arrivals; duplicates may come later), and nothing of
// a rolled-back transaction exists anywhere.
func verify(t *testing.T, db *dbtest.DB, arrivals []arrival, rolledBack map[string]bool) counts {
	type rowInfo struct {
		key   string
		seq   int64
		state int
	}
	rows := map[string]rowInfo{}
	perKey := map[string]int{}
	rs, err := db.Query("SELECT id, msg_key, seq, state FROM " + db.Table("outbox"))
	require.NoError(t, err)
	for rs.Next() {
		var id string
		var r rowInfo
		require.NoError(t, rs.Scan(&id, &r.key, &r.seq, &r.state))
		rows[id] = r
		perKey[r.key]++
	}
	require.NoError(t, rs.Close())
	orders := map[string]int{}
	rs, err = db.Query("SELECT id, events FROM " + db.Table("orders"))
	require.NoError(t, err)
	for rs.Next() {
		var id string
		var n int
		require.NoError(t, rs.Scan(&id, &n))
		orders[id] = n
	}
	require.NoError(t, rs.Close())

	var c counts
	c.expected = len(rows)
	for id, r := range rows {
		require.Equal(t, 1, r.state, "row %s is not published", id)
	}
	for order, n := range orders {
		require.Equal(t, n, perKey[order], "order %s: its row says %d events, the outbox has %d", order, n, perKey[order])
		require.False(t, rolledBack[order], "order %s was rolled back on purpose but is in the table", order)
	}
	for key := range perKey {
		_, ok := orders[key]
		require.True(t, ok, "outbox rows of key %s have no order row", key)
	}
	for o := range rolledBack {
		if _, ok := orders[o]; !ok {
			c.rolledBack++
		}
	}
	seen := map[string]bool{}
	last := map[string]int64{}
	for _, a := range arrivals {
		if rolledBack[a.key] {
			c.fromRolledBack++
		}
		r, ok := rows[a.id]
		if !ok {
			c.unknown++
			continue
		}
		if seen[a.id] {
			c.dups++
			continue
		}
		seen[a.id] = true
		if r.seq != last[r.key]+1 {
			c.outOfOrder++
			t.Errorf("key %s: seq %d arrived after seq %d", r.key, r.seq, last[r.key])
		}
		last[r.key] = r.seq
	}
	c.unique = len(seen)
	for id := range rows {
		if !seen[id] {
			c.lost++
		}
	}
	return c
}

// child is a test child process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startChild(t *testing.T, dir, name string, conf childConf) *child {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = conf.env()
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start())
	c := &child{name: name, cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() {
		c.done <- cmd.Wait()
		_ = f.Close()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		c.done <- nil
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- %s log (tail):\n%s", name, b)
		}
	})
	return c
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	err := <-c.done
	c.done <- err
}

// term stops the child gracefully and requires a clean exit.
func (c *child) term(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, c.wait(60*time.Second), "%s after SIGTERM", c.name)
}

func (c *child) wait(d time.Duration) error {
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", c.name, d)
	}
}
