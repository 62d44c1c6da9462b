package outbox_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/testenv"
)

// The inbox test of issue 12, on PostgreSQL and MariaDB through RabbitMQ:
// 1,000 events delivered with 30 % of them published twice (forced
// redeliveries), about one in ten first attempts failing after the
// handler's write (rolled back, retried by the subscriber), and the
// consumer process SIGKILLed once mid-batch, right after a commit and
// before its acknowledgement (so that delivery comes again, and every
// other unacknowledged one in its prefetch). The handler adds one to a
// counter in the inbox transaction: it ends at exactly 1,000. Outside the
// long test tier: 400 events.
func TestInboxCrash(t *testing.T) {
	for _, open := range []func(testing.TB) *dbtest.DB{dbtest.RequirePostgres, dbtest.RequireMariaDB} {
		db := open(t)
		t.Run(db.Kind, func(t *testing.T) { runInboxCrash(t, db) })
	}
}

func runInboxCrash(t *testing.T, db *dbtest.DB) {
	events := testenv.Count(400, 1000) // the long test tier's size
	killAfter := events * 2 / 5
	newStore(t, db) // migrates the inbox table
	counter := db.Table("counter")
	_, err := db.Exec("CREATE TABLE " + counter + " (id INT NOT NULL PRIMARY KEY, n BIGINT NOT NULL)")
	require.NoError(t, err)
	_, err = db.Exec("INSERT INTO " + counter + " (id, n) VALUES (1, 0)")
	require.NoError(t, err)
	dest := newRabbitDest(t)
	t.Cleanup(func() {
		_, _ = dest.ch.QueueDelete(dest.queue+".retry", false, false, false)
		_, _ = dest.ch.QueueDelete(dest.queue+".dlq", false, false, false)
	})
	pub := dest.open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var msgs []broker.Message
	published := 0
	for i := range events {
		m := keyed("order.created", fmt.Sprintf("k%d", i%50))
		msgs = append(msgs, m)
		require.NoError(t, pub.Publish(ctx, m))
		published++
		if j := i - 5; j >= 0 && j%10 < 3 { // 30 %: the same event again, a little later
			require.NoError(t, pub.Publish(ctx, msgs[j]))
			published++
		}
	}

	dir := t.TempDir()
	conf := childConf{Role: "consumer", DBKind: db.Kind, DSN: db.DSN, Prefix: db.Prefix, Broker: "rabbitmq",
		Addr: rabbitAddr(), Exchange: dest.cfg.Exchange, Queue: dest.queue, Consumer: "billing", FailEvery: 10,
		Journal: filepath.Join(dir, "unused")}
	n := func() int64 {
		var v int64
		require.NoError(t, db.QueryRow("SELECT n FROM "+counter+" WHERE id = 1").Scan(&v))
		return v
	}
	ready := func(q string) int {
		st, err := dest.ch.QueueDeclarePassive(q, true, false, false, false, nil)
		require.NoError(t, err)
		return st.Messages
	}

	first := conf
	first.KillAfter = killAfter
	c1 := startChild(t, dir, "consumer-1", first)
	require.Error(t, c1.wait(120*time.Second), "the first consumer kills itself after %d commits", killAfter)
	atKill := n()
	t.Logf("consumer SIGKILLed after a commit, before its ack, with the counter at %d", atKill)

	for i := 2; ; i++ {
		c := startChild(t, dir, fmt.Sprintf("consumer-%d", i), conf)
		brokertest.WaitFor(t, 120*time.Second, "all handled", func() bool {
			return n() >= int64(events) && ready(dest.queue) == 0 // a classic queue's failures wait unacked in the consumer
		})
		c.term(t)
		if ready(dest.queue) == 0 {
			break
		}
		require.Less(t, i, 5, "deliveries keep coming back")
	}
	var inbox int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM "+db.Table("inbox")+" WHERE consumer = 'billing'").Scan(&inbox))
	final := n()
	t.Logf("%s: %d deliveries published (%d events, %d published twice), consumer killed once at counter %d: counter %d, inbox rows %d, dead letters %d",
		db.Kind, published, events, published-events, atKill, final, inbox, ready(dest.queue+".dlq"))
	assert.Equal(t, int64(events), final, "the handler's side effect happened exactly once per event")
	assert.Equal(t, events, inbox)
	assert.Zero(t, ready(dest.queue+".dlq"), "nothing dead-lettered")
	assert.GreaterOrEqual(t, atKill, int64(killAfter))
}
