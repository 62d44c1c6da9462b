package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// The shipped SQL files are DDL with the default names, byte for byte.
func TestSchemaFilesMatchDDL(t *testing.T) {
	for _, d := range []outbox.Dialect{outbox.Postgres, outbox.MySQL, outbox.SQLite} {
		want, err := outbox.DDL(d, outbox.Tables{})
		require.NoError(t, err)
		got, err := outbox.SchemaFiles.ReadFile("sql/" + string(d) + ".sql")
		require.NoError(t, err)
		assert.True(t, strings.HasSuffix(string(got), want), "sql/%s.sql differs from outbox.DDL(%s, Tables{})", d, d)
	}
	custom, err := outbox.DDL(outbox.Postgres, outbox.Tables{Outbox: "app.events_out"})
	require.NoError(t, err)
	assert.Contains(t, custom, "CREATE TABLE IF NOT EXISTS app.events_out (")
	assert.Contains(t, custom, "events_out_head ON app.events_out")
	assert.Contains(t, custom, "domainevents_outbox_keys", "unset names keep their defaults")
}

func TestBadArguments(t *testing.T) {
	db, err := sql.Open("sqlite", ":memory:")
	require.NoError(t, err)
	defer db.Close()
	s, err := outbox.New(db, outbox.SQLite)
	require.NoError(t, err)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil db", func() error { _, err := outbox.New(nil, outbox.Postgres); return err }(), "db is nil"},
		{"dialect", func() error { _, err := outbox.New(db, "oracle"); return err }(), `dialect "oracle"`},
		{"table name", func() error {
			_, err := outbox.New(db, outbox.SQLite, outbox.WithTables(outbox.Tables{Outbox: "x; DROP TABLE y"}))
			return err
		}(), "Tables.Outbox"},
		{"same names", func() error {
			_, err := outbox.New(db, outbox.SQLite, outbox.WithTables(outbox.Tables{Outbox: "a", Keys: "a"}))
			return err
		}(), "must differ"},
		{"sqlite schema", func() error {
			_, err := outbox.New(db, outbox.SQLite, outbox.WithTables(outbox.Tables{Outbox: "main.events"}))
			return err
		}(), "unqualified"},
		{"nil hook", func() error { _, err := outbox.New(db, outbox.SQLite, outbox.WithMessageHook(nil)); return err }(), "WithMessageHook"},
		{"max size", func() error { _, err := outbox.New(db, outbox.SQLite, outbox.WithMaxMessageSize(0)); return err }(), "WithMaxMessageSize(0)"},
		{"nil broker", func() error { _, err := outbox.NewRelay(s, nil); return err }(), "must not be nil"},
		{"timeout vs lease", func() error {
			_, err := outbox.NewRelay(s, &brokertest.Recorder{}, outbox.WithLease(time.Second), outbox.WithPublishTimeout(time.Second))
			return err
		}(), "must be shorter than half the lease"},
		{"batch", func() error {
			_, err := outbox.NewRelay(s, &brokertest.Recorder{}, outbox.WithBatchSize(0))
			return err
		}(), "WithBatchSize(0)"},
		{"attempts", func() error {
			_, err := outbox.NewRelay(s, &brokertest.Recorder{}, outbox.WithMaxAttempts(0))
			return err
		}(), "WithMaxAttempts(0)"},
		{"backoff", func() error {
			_, err := outbox.NewRelay(s, &brokertest.Recorder{}, outbox.WithBackoff(time.Second, time.Millisecond))
			return err
		}(), "WithBackoff"},
		{"owner", func() error {
			_, err := outbox.NewRelay(s, &brokertest.Recorder{}, outbox.WithOwner(strings.Repeat("x", 65)))
			return err
		}(), "WithOwner"},
		{"consumer", func() error { _, err := outbox.NewInbox(s, ""); return err }(), "consumer"},
		{"window", func() error { _, err := outbox.NewInbox(s, "c", outbox.WithInboxWindow(0, time.Second)); return err }(), "WithInboxWindow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Error(t, c.err)
			assert.ErrorIs(t, c.err, broker.ErrInvalid)
			assert.Contains(t, c.err.Error(), c.want)
		})
	}
}

func TestWrite(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		ctx := context.Background()

		t.Run("migrate is idempotent", func(t *testing.T) {
			require.NoError(t, s.Migrate(ctx))
		})

		t.Run("no transaction", func(t *testing.T) {
			err := s.Publish(ctx, newMsg("k"))
			require.ErrorIs(t, err, broker.ErrInvalid)
			assert.Contains(t, err.Error(), "no transaction in ctx")
		})

		t.Run("empty key", func(t *testing.T) {
			m := newMsg("")
			err := s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, m) })
			require.ErrorIs(t, err, broker.ErrInvalid)
			assert.Contains(t, err.Error(), "Key is empty")
			assert.False(t, stateOf(t, db, m.ID).Exists)
		})

		t.Run("commit stores, rollback does not", func(t *testing.T) {
			kept, lost := newMsg("k1"), newMsg("k1")
			write(t, s, kept)
			boom := errors.New("boom")
			err := s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
				require.NoError(t, s.Publish(ctx, lost))
				return boom
			})
			require.ErrorIs(t, err, boom)
			assert.True(t, stateOf(t, db, kept.ID).Exists)
			assert.False(t, stateOf(t, db, lost.ID).Exists)
			// The rolled-back seq is not used up: the next one follows on.
			next := newMsg("k1")
			write(t, s, next)
			assert.Equal(t, int64(1), stateOf(t, db, kept.ID).Seq)
			assert.Equal(t, int64(2), stateOf(t, db, next.ID).Seq)
		})

		t.Run("panic rolls back and becomes an error", func(t *testing.T) {
			m := newMsg("k2")
			err := s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
				require.NoError(t, s.Publish(ctx, m))
				panic("handler bug")
			})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "handler bug")
			assert.False(t, stateOf(t, db, m.ID).Exists)
		})

		t.Run("duplicate id", func(t *testing.T) {
			m := newMsg("k3")
			write(t, s, m)
			err := s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, m) })
			require.ErrorIs(t, err, broker.ErrUnavailable)
			require.ErrorIs(t, err, outbox.ErrDatabase)
			assert.Contains(t, err.Error(), m.ID)
		})

		t.Run("own transaction with WithTx", func(t *testing.T) {
			m := newMsg("k4")
			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, s.Publish(outbox.WithTx(ctx, tx), m))
			require.NoError(t, tx.Commit())
			s.Notify()
			assert.True(t, stateOf(t, db, m.ID).Exists)
		})

		t.Run("closed", func(t *testing.T) {
			s2 := newStore(t, db)
			require.NoError(t, s2.Close(ctx))
			require.NoError(t, s2.Close(ctx))
			err := s2.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error { return nil })
			assert.ErrorIs(t, err, broker.ErrClosed)
		})
	})
}

// Messages come out as they went in: body bytes, headers (with what the
// hook added), content type, time, key.
func TestRoundTrip(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db, outbox.WithMessageHook(func(ctx context.Context, m *broker.Message) {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		}))
		m := newMsg("order-1")
		m.Body = []byte{0, 1, 2, 0xff, '"', '\\'}
		m.Headers = map[string]string{"tenant": "t-1"}
		m.Time = time.Date(2026, 11, 30, 10, 15, 30, 123456000, time.UTC)
		plain := newMsg("order-2")
		plain.ContentType = ""
		write(t, s, m, plain)

		rec := &brokertest.Recorder{}
		startRelay(t, s, rec, fastRelay()...)
		brokertest.WaitFor(t, 10*time.Second, "two published", func() bool { return len(rec.Messages()) == 2 })
		got := map[string]broker.Message{}
		for _, g := range rec.Messages() {
			got[g.ID] = g
		}
		g := got[m.ID]
		assert.Equal(t, m.Body, g.Body)
		assert.Equal(t, m.Name, g.Name)
		assert.Equal(t, "order-1", g.Key)
		assert.Equal(t, broker.ContentTypeJSON, g.ContentType)
		assert.Equal(t, map[string]string{"tenant": "t-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			broker.HeaderSeq: "1"}, g.Headers, "the key's sequence number travels as a header")
		assert.True(t, m.Time.Equal(g.Time), "time %v, want %v", g.Time, m.Time)
		assert.Equal(t, map[string]string{"tenant": "t-1"}, m.Headers, "the caller's headers are not modified")
		assert.Empty(t, got[plain.ID].ContentType)
	})
}

// Concurrent writers on a few keys, a quarter of their transactions rolled
// back: each key's seq is 1..n without a gap, and the relay publishes each
// key in seq order.
func TestSeqGapFreeUnderConcurrentWriters(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		keys := []string{"a", "b", "c", "d"}
		var committed [4]atomic.Int64
		var wg sync.WaitGroup
		writers, per := 16, 12
		if db.Kind == "sqlite" {
			writers, per = 8, 8
		}
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range per {
					k := (w + i) % len(keys)
					rollback := (w*per+i)%4 == 0
					err := s.Transact(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
						if err := s.Publish(ctx, newMsg(keys[k])); err != nil {
							return err
						}
						if rollback {
							return errRollback
						}
						return nil
					})
					switch {
					case err == nil:
						committed[k].Add(1)
					case errors.Is(err, errRollback):
					case retryable(err):
						// A deadlock victim: its work rolled back, as if on purpose.
					default:
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		for i, k := range keys {
			rows, err := db.Query(rebind(db, "SELECT seq FROM "+db.Table("outbox")+" WHERE msg_key = ? ORDER BY seq"), k)
			require.NoError(t, err)
			var seqs []int64
			for rows.Next() {
				var n int64
				require.NoError(t, rows.Scan(&n))
				seqs = append(seqs, n)
			}
			require.NoError(t, rows.Close())
			require.Len(t, seqs, int(committed[i].Load()), "key %s", k)
			for j, n := range seqs {
				require.Equal(t, int64(j+1), n, "key %s: seq gap", k)
			}
		}

		rec := &brokertest.Recorder{}
		startRelay(t, s, rec, fastRelay()...)
		total := 0
		for i := range keys {
			total += int(committed[i].Load())
		}
		brokertest.WaitFor(t, 20*time.Second, "all published", func() bool { return len(rec.Messages()) >= total })
		seqOf := map[string]int64{}
		for _, m := range rec.Messages() {
			seqOf[m.ID] = stateOf(t, db, m.ID).Seq
		}
		last := map[string]int64{}
		for _, m := range rec.Messages() {
			require.Equal(t, strconv.FormatInt(seqOf[m.ID], 10), m.Headers[broker.HeaderSeq], "the seq header")
			require.Equal(t, last[m.Key]+1, seqOf[m.ID], "key %s published out of order", m.Key)
			last[m.Key] = seqOf[m.ID]
		}
	})
}

var errRollback = errors.New("rolled back on purpose")

// retryable reports a deadlock or lock-wait victim (MariaDB 1213/1205,
// PostgreSQL 40P01/40001, SQLite busy): the transaction did not commit.
func retryable(err error) bool {
	s := err.Error()
	for _, m := range []string{"Deadlock found", "Error 1213", "Error 1205", "40P01", "40001", "SQLITE_BUSY", "database is locked"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// A row is marked published only once the broker confirmed it; a failed
// publish leaves it pending with its attempt and error, backing off.
func TestMarksOnlyAfterConfirm(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		g := newGate()
		held := newMsg("held")
		g.hold(held.ID)
		failing := newMsg("failing")
		g.Fail = func(m broker.Message) error {
			if m.ID == failing.ID {
				return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: errors.New("connection reset")}
			}
			return nil
		}
		write(t, s, held, failing)
		r := startRelay(t, s, g, fastRelay(outbox.WithBackoff(time.Hour, time.Hour), outbox.WithBrokerBackoff(time.Hour))...)

		brokertest.WaitFor(t, 10*time.Second, "publish in flight", func() bool { return g.isWaiting(held.ID) })
		st := stateOf(t, db, held.ID)
		assert.Equal(t, 0, st.State, "not marked while the broker has not confirmed")
		assert.Equal(t, r.Owner(), st.Owner.String, "leased to the relay")
		assert.Equal(t, 1, st.Attempts)

		brokertest.WaitFor(t, 10*time.Second, "failure recorded", func() bool { return stateOf(t, db, failing.ID).LastError.Valid })
		st = stateOf(t, db, failing.ID)
		assert.Equal(t, 0, st.State, "a failed row stays pending")
		assert.False(t, st.Owner.Valid, "and its lease is given up")
		assert.Contains(t, st.LastError.String, "connection reset")

		g.release(held.ID)
		brokertest.WaitFor(t, 10*time.Second, "marked after the confirm", func() bool { return stateOf(t, db, held.ID).State == 1 })
		assert.False(t, stateOf(t, db, held.ID).Owner.Valid)
		brokertest.WaitFor(t, 10*time.Second, "counted", func() bool { return r.Stats().Published == 1 })
		// The held row's confirm tells the relay the broker is back, which
		// makes the failing row due again at once: retried at least once.
		assert.GreaterOrEqual(t, r.Stats().Retried, int64(1))
	})
}

// A row leased by a relay that vanished is taken over once its lease runs
// out, not before; other keys flow meanwhile.
func TestLeaseTakeoverAfterExpiry(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		orphan, free := newMsg("orphan"), newMsg("free")
		write(t, s, orphan, free)
		setLease(t, db, orphan.ID, "crashed-relay", time.Hour)

		rec := &brokertest.Recorder{}
		r := startRelay(t, s, rec, fastRelay()...)
		brokertest.WaitFor(t, 10*time.Second, "free key published", func() bool { return stateOf(t, db, free.ID).State == 1 })
		st := stateOf(t, db, orphan.ID)
		assert.Equal(t, 0, st.State, "still leased to the crashed relay")
		assert.Equal(t, "crashed-relay", st.Owner.String)

		setLease(t, db, orphan.ID, "crashed-relay", 0) // its lease runs out
		brokertest.WaitFor(t, 10*time.Second, "orphan taken over", func() bool { return stateOf(t, db, orphan.ID).State == 1 })
		brokertest.WaitFor(t, 10*time.Second, "counted", func() bool { return r.Stats().Published == 2 })
	})
}

// A relay whose row was taken over while its publish was in flight does
// not mark it: the new owner does.
func TestLostLeaseDoesNotMark(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		g := newGate()
		m := newMsg("k")
		g.hold(m.ID)
		write(t, s, m)
		r := startRelay(t, s, g, fastRelay()...)
		brokertest.WaitFor(t, 10*time.Second, "publish in flight", func() bool { return g.isWaiting(m.ID) })

		setLease(t, db, m.ID, "other-relay", time.Hour) // another relay took it over
		g.release(m.ID)
		brokertest.WaitFor(t, 10*time.Second, "lost lease counted", func() bool { return r.Stats().LostLeases == 1 })
		st := stateOf(t, db, m.ID)
		assert.Equal(t, 0, st.State, "not marked by the relay that lost the lease")
		assert.Equal(t, "other-relay", st.Owner.String)
		assert.Zero(t, r.Stats().Published)
	})
}

// One key's messages always fail with an error of no category (maybe
// the message's own fault): each is dead-lettered after N attempts, in seq
// order, while every other key flows.
func TestPoisonKeyIsolated(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		rec := &brokertest.Recorder{Fail: func(m broker.Message) error {
			if m.Key == "poison" {
				return errors.New("nack") // no category: counted against WithMaxAttempts
			}
			return nil
		}}
		sink := &sinkRecorder{}
		var poison, good []broker.Message
		for i := range 3 {
			poison = append(poison, newMsg("poison"))
			for k := range 5 {
				good = append(good, newMsg(fmt.Sprintf("good-%d", k)))
			}
			write(t, s, poison[i])
		}
		write(t, s, good...)
		var dead atomic.Int64
		obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
			if o.Kind == broker.ObservedDeadLetter {
				dead.Add(1)
			}
		})
		r := startRelay(t, s, rec, fastRelay(outbox.WithMaxAttempts(3), outbox.WithDeadLetter(sink), outbox.WithObserver(obs), outbox.WithBacklogInterval(time.Second))...)
		brokertest.WaitFor(t, 20*time.Second, "poison key dead-lettered", func() bool { return len(sink.all()) == 3 })
		brokertest.WaitFor(t, 20*time.Second, "others published", func() bool { return len(rec.Messages()) == len(good) })
		// The sink takes a dead letter before its row is marked dead, and the
		// observer hears of it after: wait for the last one's observation.
		brokertest.WaitFor(t, 10*time.Second, "observed", func() bool { return dead.Load() == 3 })
		assert.Equal(t, int64(3), r.Stats().DeadLettered)
		for i, d := range sink.all() {
			assert.Equal(t, poison[i].ID, d.Message.ID, "dead-lettered in seq order")
			assert.Equal(t, 3, d.Attempts)
			assert.Equal(t, broker.CategoryUnknown, d.Category)
			assert.Contains(t, d.Reason, "nack")
			st := stateOf(t, db, poison[i].ID)
			assert.Equal(t, 2, st.State)
			assert.Contains(t, st.LastError.String, "nack")
		}
	})
}

// A message the broker can never take (invalid, too large) is dead at its
// first failure; without a sink it is only marked dead in the table.
func TestInvalidDeadAtOnceWithoutSink(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		m := newMsg("k")
		rec := &brokertest.Recorder{Fail: func(broker.Message) error {
			return &broker.Error{Op: "test", Kind: broker.ErrTooLarge, Err: errors.New("16 MiB")}
		}}
		write(t, s, m)
		startRelay(t, s, rec, fastRelay()...)
		brokertest.WaitFor(t, 10*time.Second, "dead", func() bool { return stateOf(t, db, m.ID).State == 2 })
		assert.Equal(t, 1, stateOf(t, db, m.ID).Attempts)
	})
}

type sinkRecorder struct {
	mu sync.Mutex
	d  []broker.DeadLetter
}

func (s *sinkRecorder) Put(_ context.Context, d broker.DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return nil
}

func (s *sinkRecorder) all() []broker.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]broker.DeadLetter(nil), s.d...)
}

// Prune deletes published rows only: pending and dead ones stay, and so
// do the counters of keys that still have rows.
func TestPruneDeletesOnlyPublished(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		pub, pending, dead := newMsg("a"), newMsg("b"), newMsg("c")
		write(t, s, pub, pending, dead)
		_, err := db.Exec(rebind(db, "UPDATE "+db.Table("outbox")+" SET state = 1, published_at = created_at WHERE id = ?"), pub.ID)
		require.NoError(t, err)
		_, err = db.Exec(rebind(db, "UPDATE "+db.Table("outbox")+" SET state = 2, dead_at = created_at WHERE id = ?"), dead.ID)
		require.NoError(t, err)

		n, err := s.Prune(context.Background(), time.Hour, 10)
		require.NoError(t, err)
		assert.Zero(t, n, "younger than the retention")
		n, err = s.Prune(context.Background(), 0, 1)
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
		assert.False(t, stateOf(t, db, pub.ID).Exists)
		assert.True(t, stateOf(t, db, pending.ID).Exists)
		assert.True(t, stateOf(t, db, dead.ID).Exists)
		var keys int
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+db.Table("keys")).Scan(&keys))
		assert.Equal(t, 2, keys, "the emptied key's counter goes, the others stay")
		// The emptied key starts again at 1.
		again := newMsg("a")
		write(t, s, again)
		assert.Equal(t, int64(1), stateOf(t, db, again.ID).Seq)

		rows, lag, err := s.Backlog(context.Background())
		require.NoError(t, err)
		assert.Equal(t, int64(2), rows)
		assert.GreaterOrEqual(t, lag, time.Duration(0))
	})
}

// Close lets the publish in flight finish and mark, then gives up the
// leases; a second Close is nil; Health says closed.
func TestRelayClose(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		g := newGate()
		m := newMsg("k")
		g.hold(m.ID)
		write(t, s, m)
		r, err := outbox.NewRelay(s, g, fastRelay()...)
		require.NoError(t, err)
		require.NoError(t, r.Health(context.Background()))
		brokertest.WaitFor(t, 10*time.Second, "in flight", func() bool { return g.isWaiting(m.ID) })
		closed := make(chan error, 1)
		go func() { closed <- r.Close(context.Background()) }()
		g.release(m.ID)
		require.NoError(t, <-closed)
		assert.Equal(t, 1, stateOf(t, db, m.ID).State, "the publish in flight was marked")
		require.NoError(t, r.Close(context.Background()))
		assert.ErrorIs(t, r.Health(context.Background()), broker.ErrClosed)

		// A Close whose ctx ends first cancels and gives up.
		g2 := newGate()
		m2 := newMsg("k2")
		g2.hold(m2.ID)
		write(t, s, m2)
		r2, err := outbox.NewRelay(s, blocking{g2}, fastRelay()...)
		require.NoError(t, err)
		brokertest.WaitFor(t, 10*time.Second, "in flight", func() bool { return g2.isWaiting(m2.ID) })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, r2.Close(ctx), context.DeadlineExceeded)
		g2.release(m2.ID)
		assert.Equal(t, 0, stateOf(t, db, m2.ID).State)
	})
}

// blocking honours ctx while held, like a real adapter waiting for a
// confirm.
type blocking struct{ g *gate }

func (b blocking) Publish(ctx context.Context, m broker.Message) error {
	done := make(chan error, 1)
	go func() { done <- b.g.Publish(ctx, m) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return &broker.Error{Op: "test", Kind: broker.ErrUnavailable, Err: ctx.Err()}
	}
}

func (b blocking) Close(ctx context.Context) error { return b.g.Close(ctx) }

// The inbox runs the handler once per event id: a duplicate is skipped,
// a failing handler's writes roll back with the inbox row, so its retry
// runs again.
func TestInbox(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		_, err := db.Exec("CREATE TABLE " + db.Table("effects") + " (event_id VARCHAR(64) NOT NULL)")
		require.NoError(t, err)
		logs := &brokertest.LogCounter{}
		var dups atomic.Int64
		obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
			if o.Kind == broker.ObservedDuplicate && o.Component == "outbox inbox" && o.MessageID != "" {
				dups.Add(1)
			}
		})
		in, err := outbox.NewInbox(s, "billing", outbox.WithInboxWindow(time.Hour, time.Hour),
			outbox.WithInboxLogger(slog.New(logs)), outbox.WithInboxObserver(obs))
		require.NoError(t, err)
		defer in.Close(context.Background())

		fail := atomic.Bool{}
		var calls atomic.Int64
		h := in.Handler(func(ctx context.Context, d broker.Delivery) error {
			calls.Add(1)
			tx, ok := outbox.TxFrom(ctx)
			require.True(t, ok)
			if _, err := tx.ExecContext(ctx, rebind(db, "INSERT INTO "+db.Table("effects")+" (event_id) VALUES (?)"), d.ID); err != nil {
				return err
			}
			if fail.Load() {
				return errors.New("handler failed")
			}
			return nil
		})
		effects := func() int {
			var n int
			require.NoError(t, db.QueryRow("SELECT count(*) FROM "+db.Table("effects")).Scan(&n))
			return n
		}
		d := broker.Delivery{Message: newMsg("k"), Source: "test"}
		ctx := context.Background()

		fail.Store(true)
		require.Error(t, h(ctx, d))
		assert.Zero(t, effects(), "rolled back")
		fail.Store(false)
		require.NoError(t, h(ctx, d))
		assert.Equal(t, 1, effects())
		require.NoError(t, h(ctx, d), "a duplicate is acknowledged")
		assert.Equal(t, 1, effects(), "and not handled again")
		assert.Equal(t, int64(2), calls.Load())
		assert.Equal(t, int64(1), dups.Load(), "the duplicate is reported to the observer")
		assert.Equal(t, 1, logs.Count("outbox inbox", slog.LevelDebug), "and logged at Debug: %s", logs)

		other, err := outbox.NewInbox(s, "shipping")
		require.NoError(t, err)
		defer other.Close(ctx)
		require.NoError(t, other.Handler(func(ctx context.Context, d broker.Delivery) error { calls.Add(1); return nil })(ctx, d))
		assert.Equal(t, int64(3), calls.Load(), "deduplication is per consumer")

		err = h(ctx, broker.Delivery{Source: "q"})
		assert.ErrorIs(t, err, broker.ErrInvalid)

		// Concurrent deliveries of one id: exactly one runs.
		d2 := broker.Delivery{Message: newMsg("k"), Source: "test"}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { assert.NoError(t, h(ctx, d2)) })
		}
		wg.Wait()
		assert.Equal(t, 2, effects())
		assert.Equal(t, int64(8), dups.Load(), "seven more duplicates")

		n, err := in.Cleanup(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "younger than the window")
	})
}

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	os.Exit(m.Run())
}

// The relay reports the backlog and lag gauges, and deletes published rows
// past the retention on its own.
func TestGaugesAndRetention(t *testing.T) {
	noLeak(t)
	db := dbtest.OpenSQLite(t)
	s := newStore(t, db)
	var backlog, lag atomic.Int64
	obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
		switch o.Kind {
		case broker.ObservedOutboxBacklog:
			backlog.Add(1)
			assert.Equal(t, "outbox relay", o.Component)
			assert.GreaterOrEqual(t, o.Value, 0.0)
		case broker.ObservedOutboxLag:
			lag.Add(1)
			assert.GreaterOrEqual(t, o.Value, 0.0)
		}
	})
	m := newMsg("k")
	write(t, s, m)
	r := startRelay(t, s, &brokertest.Recorder{}, fastRelay(outbox.WithObserver(obs), outbox.WithBacklogInterval(20*time.Millisecond),
		outbox.WithRetention(time.Millisecond, 20*time.Millisecond))...)
	brokertest.WaitFor(t, 10*time.Second, "gauges reported", func() bool { return backlog.Load() > 0 && lag.Load() > 0 })
	brokertest.WaitFor(t, 10*time.Second, "published row pruned", func() bool { return !stateOf(t, db, m.ID).Exists })
	assert.Equal(t, int64(1), r.Stats().Published)
}
