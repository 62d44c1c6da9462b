package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/rabbittest"
	"github.com/domainevents/domainevents/internal/testenv"
	"github.com/domainevents/domainevents/outbox"
)

type orderRun struct {
	orders, events int // events per order, each in a transaction of its own (some of two)
	cuts           int // connection cuts of the consumers
	kills          int // consumer processes SIGKILLed mid-stream
}

// TestOrderEndToEnd: orders written to the outbox on PostgreSQL, each
// order's events in transactions of their own from 16 writers (a tenth
// rolled back), relayed to RabbitMQ, consumed by a child process with
// WithConcurrency(16) through the inbox (one in twenty first attempts
// failing after the handler's write), its connection cut and the process
// SIGKILLed right after a commit, before its acknowledgement: the
// consumer's table holds every committed event once, each order's in the
// order its transactions committed.
func TestOrderEndToEnd(t *testing.T) {
	runOrderEndToEnd(t, orderRun{orders: 30, events: 10, cuts: 1, kills: 1})
}

// TestOrderEndToEndLong: 100 orders × 30 events, three cuts, two kills.
func TestOrderEndToEndLong(t *testing.T) {
	testenv.Long(t, "3,000 events through three connection cuts and two consumer SIGKILLs")
	runOrderEndToEnd(t, orderRun{orders: 100, events: 30, cuts: 3, kills: 2})
}

func runOrderEndToEnd(t *testing.T, r orderRun) {
	db := dbtest.RequirePostgres(t)
	s := newStore(t, db)
	applied := db.Table("applied")
	_, err := db.Exec("CREATE TABLE " + applied + " (pos BIGSERIAL PRIMARY KEY, msg_key TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL)")
	require.NoError(t, err)
	dest := newRabbitDest(t)
	t.Cleanup(func() { _, _ = dest.ch.QueueDelete(dest.queue+".dlq", false, false, false) })
	startRelay(t, s, dest.open(t), fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
	proxy := rabbittest.NewProxy(t, rabbitAddr()) // the consumers' way to the broker, to cut

	// Write: each order's events in transactions of their own, orders
	// interleaved by 16 writers; the outbox table is what committed.
	var committed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for e := 0; e < r.events; {
				for o := w; o < r.orders; o += 16 {
					n := 1 + rand.IntN(2) // events in this transaction
					rollback := rand.IntN(10) == 0
					err := s.Transact(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
						for range n {
							if err := s.Publish(ctx, newMsg(fmt.Sprintf("order-%d", o))); err != nil {
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
						committed.Add(int64(n))
					case rollback || retryable(err):
					default:
						errs <- err
						return
					}
				}
				e++
			}
		})
	}

	dir := t.TempDir()
	conf := childConf{Role: "ordered-consumer", DBKind: db.Kind, DSN: db.DSN, Prefix: db.Prefix, Broker: "rabbitmq",
		Addr: proxy.Addr(), Exchange: dest.cfg.Exchange, Queue: dest.queue, Consumer: "shipping", FailEvery: 20,
		Journal: filepath.Join(dir, "unused")}
	count := func() int64 {
		var n int64
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+applied).Scan(&n))
		return n
	}
	total := int64(r.orders * r.events) // about: rolled-back transactions are not counted, two-event ones count twice
	cut := func() {
		if proxy.Cut() > 0 {
			t.Logf("consumer connection cut at %d applied", count())
		}
	}
	cuts := 0
	for k := range r.kills {
		c := conf
		c.KillAfter = int(total) / (r.kills + 2)
		ch := startChild(t, dir, fmt.Sprintf("consumer-%d", k+1), c)
		if cuts < r.cuts {
			at := count() + int64(c.KillAfter/2)
			brokertest.WaitFor(t, 2*time.Minute, "progress before the cut", func() bool { return count() >= at })
			cut()
			cuts++
		}
		require.Error(t, ch.wait(3*time.Minute), "the consumer kills itself after %d commits", c.KillAfter)
		t.Logf("consumer %d SIGKILLed after a commit, before its ack, at %d applied", k+1, count())
	}
	last := startChild(t, dir, "consumer-last", conf)
	for ; cuts < r.cuts; cuts++ {
		at := count() + total/int64(2*(r.cuts+1))
		brokertest.WaitFor(t, 2*time.Minute, "progress before the cut", func() bool {
			n := count()
			return n >= at || n >= committed.Load() // or nothing left (yet) to apply
		})
		cut()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	want := committed.Load()
	brokertest.WaitFor(t, 3*time.Minute, "every committed event applied", func() bool { return count() >= want })
	last.term(t)

	// The truth: the outbox rows (every committed event, its seq).
	type ev struct {
		key string
		seq int64
	}
	truth := map[string]ev{}
	rows, err := db.Query("SELECT id, msg_key, seq FROM " + db.Table("outbox"))
	require.NoError(t, err)
	for rows.Next() {
		var id string
		var e ev
		require.NoError(t, rows.Scan(&id, &e.key, &e.seq))
		truth[id] = e
	}
	require.NoError(t, rows.Close())
	require.Len(t, truth, int(want))

	rows, err = db.Query("SELECT event_id, msg_key, seq FROM " + applied + " ORDER BY pos")
	require.NoError(t, err)
	seen := map[string]int{}
	last2 := map[string]int64{}
	var dups, phantoms, inversions, mismatched int
	for rows.Next() {
		var id string
		var e ev
		require.NoError(t, rows.Scan(&id, &e.key, &e.seq))
		seen[id]++
		if seen[id] > 1 {
			dups++
		}
		tr, ok := truth[id]
		switch {
		case !ok:
			phantoms++
		case tr != e:
			mismatched++
		}
		if e.seq != last2[e.key]+1 {
			inversions++
		}
		last2[e.key] = e.seq
	}
	require.NoError(t, rows.Close())
	lost := 0
	for id := range truth {
		if seen[id] == 0 {
			lost++
		}
	}
	dead, err := dest.ch.QueueDeclarePassive(dest.queue+".dlq", true, false, false, false, nil)
	require.NoError(t, err)
	t.Logf("outbox (postgres) -> rabbitmq -> WithConcurrency(16) + inbox: %d orders, %d committed events, %d consumer cuts, %d consumer SIGKILLs: "+
		"applied %d, lost %d, applied twice %d, not committed %d, out of commit order %d, dead letters %d",
		r.orders, want, cuts, r.kills, len(seen), lost, dups, phantoms, inversions, dead.Messages)
	assert.Zero(t, lost, "committed events never applied")
	assert.Zero(t, dups, "events applied twice")
	assert.Zero(t, phantoms, "events applied that never committed")
	assert.Zero(t, mismatched, "key or seq differing from the outbox's")
	assert.Zero(t, inversions, "events applied out of their key's commit order (or with a gap)")
	assert.Zero(t, dead.Messages)
}
