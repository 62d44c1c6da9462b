package outbox_test

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// timedRecorder records each message and when it was published (the
// first time), by id.
type timedRecorder struct {
	brokertest.Recorder
	mu sync.Mutex
	at map[string]time.Time
}

func newTimedRecorder() *timedRecorder { return &timedRecorder{at: map[string]time.Time{}} }

func (r *timedRecorder) Publish(ctx context.Context, m broker.Message) error {
	now := time.Now()
	if err := r.Recorder.Publish(ctx, m); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.at[m.ID]; !ok {
		r.at[m.ID] = now
	}
	return nil
}

// published returns when id was published, and whether it was.
func (r *timedRecorder) published(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[id]
	return t, ok
}

// message returns the first recorded copy of id.
func (r *timedRecorder) message(t *testing.T, id string) broker.Message {
	t.Helper()
	for _, m := range r.Messages() {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("message %s was not published", id)
	return broker.Message{}
}

func (r *timedRecorder) waitPublished(t *testing.T, what string, ids ...string) {
	t.Helper()
	brokertest.WaitFor(t, 30*time.Second, what, func() bool {
		for _, id := range ids {
			if _, ok := r.published(id); !ok {
				return false
			}
		}
		return true
	})
}

// TestScheduled: on each database, a message stored with a deliver-at
// time is published at that time, not before, with its own key and no
// sequence number; it does not hold its key's later events (one an hour
// ahead stays pending while they flow), leaves no gap in the key's
// sequence, is not counted in the backlog before its time, and keeps its
// time across a relay's restart.
func TestScheduled(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		rec := newTimedRecorder()
		relay := startRelay(t, s, rec, fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
		ctx := context.Background()
		key := "order-" + newID()

		first, second := newMsg(key), newMsg(key)
		soon, later := newMsg(key), newMsg(key)
		soon.Name, later.Name = "order.payment_reminder", "order.payment_reminder"
		soon.Headers = map[string]string{"reminder": "1"}
		soonAt := time.Now().Add(1500 * time.Millisecond)
		laterAt := time.Now().Add(time.Hour)
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			for _, p := range []struct {
				m  broker.Message
				at time.Time
			}{{first, time.Time{}}, {soon, soonAt}, {later, laterAt}, {second, time.Time{}}} {
				if err := s.Publish(outbox.WithDeliverAt(ctx, p.at), p.m); err != nil {
					return err
				}
			}
			return nil
		}))

		rec.waitPublished(t, "the key's events, not held by the scheduled ones", first.ID, second.ID)
		assert.Equal(t, "1", rec.message(t, first.ID).Headers[broker.HeaderSeq])
		assert.Equal(t, "2", rec.message(t, second.ID).Headers[broker.HeaderSeq], "no gap: the scheduled events took no number")

		rec.waitPublished(t, "the event scheduled in 1.5 s", soon.ID)
		at, _ := rec.published(soon.ID)
		assert.False(t, at.Before(soonAt), "published at %v, before its time %v", at, soonAt)
		got := rec.message(t, soon.ID)
		assert.Equal(t, key, got.Key, "its own key, not its lane")
		assert.Equal(t, "order.payment_reminder", got.Name)
		assert.NotContains(t, got.Headers, broker.HeaderSeq, "not in the key's sequence")
		assert.Equal(t, map[string]string{"reminder": "1"}, got.Headers, "the user's headers, nothing the outbox kept")

		st := stateOf(t, db, later.ID)
		assert.Equal(t, 0, st.State, "the event an hour ahead is pending")
		assert.Equal(t, 0, st.Attempts, "and was never claimed")
		// The published rows are marked just after the broker's confirm:
		// wait for that; the row an hour ahead must not count.
		brokertest.WaitFor(t, time.Minute, "a backlog of 0: a scheduled event is no backlog before its time", func() bool {
			rows, _, err := s.Backlog(ctx)
			return err == nil && rows == 0
		})

		// A relay restarted keeps the schedule: the row holds the time.
		require.NoError(t, relay.Close(ctx))
		next, third := newMsg(key), newMsg(key)
		nextAt := time.Now().Add(1500 * time.Millisecond)
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			if err := s.Publish(outbox.WithDeliverAt(ctx, nextAt), next); err != nil {
				return err
			}
			return s.Publish(ctx, third)
		}))
		startRelay(t, s, rec, fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
		rec.waitPublished(t, "the key's event after the restart", third.ID)
		assert.Equal(t, "3", rec.message(t, third.ID).Headers[broker.HeaderSeq])
		rec.waitPublished(t, "the event scheduled before the restart", next.ID)
		at, _ = rec.published(next.ID)
		assert.False(t, at.Before(nextAt), "published at %v, before its time %v", at, nextAt)
		assert.Equal(t, 0, stateOf(t, db, later.ID).Attempts, "the event an hour ahead still waits")
		_, ok := rec.published(later.ID)
		assert.False(t, ok)
	})
}

// The inbox applies what the relay published for a key, a scheduled
// event among the key's others in any order, without waiting for it
// (no ErrOutOfOrder) or for anything on its account.
func TestScheduledInbox(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		rec := newTimedRecorder()
		startRelay(t, s, rec, fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
		ctx := context.Background()
		key := "order-" + newID()
		a, reminder, b := newMsg(key), newMsg(key), newMsg(key)
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			if err := s.Publish(ctx, a); err != nil {
				return err
			}
			if err := s.Publish(outbox.WithDeliverAt(ctx, time.Now().Add(-time.Second)), reminder); err != nil { // due at once
				return err
			}
			return s.Publish(ctx, b)
		}))
		rec.waitPublished(t, "the three events", a.ID, reminder.ID, b.ID)

		delivery := func(id string) broker.Delivery {
			m := rec.message(t, id)
			d := broker.Delivery{Message: m, Attempt: 1, Source: "test"}
			if v, ok := m.Headers[broker.HeaderSeq]; ok {
				n, err := strconv.ParseInt(v, 10, 64)
				require.NoError(t, err)
				d.Seq = n
			}
			return d
		}
		// The scheduled event first, between, and last (a consumer of its
		// own for each order): all apply at once.
		for i, order := range [][]string{{reminder.ID, a.ID, b.ID}, {a.ID, reminder.ID, b.ID}, {a.ID, b.ID, reminder.ID}} {
			in := newInbox(t, s, "reminders-"+strconv.Itoa(i))
			var handled []string
			h := in.Handler(func(_ context.Context, d broker.Delivery) error {
				handled = append(handled, d.ID)
				return nil
			})
			for _, id := range order {
				require.NoError(t, h(ctx, delivery(id)), "order %d, event %s", i, id)
			}
			assert.Equal(t, order, handled)
			assert.Empty(t, in.Blocked())
			n, err := in.Applied(ctx, key)
			require.NoError(t, err)
			assert.Equal(t, int64(2), n, "the key's own events applied, 1 and 2")
		}
	})
}

// Tables made before deliver_at existed: Migrate adds the column (once,
// however often it runs), the rows already there are published as
// before, and scheduling works.
func TestScheduledMigrateExistingTable(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		ctx := context.Background()
		ddl, err := outbox.DDL(dialectOf(db), tablesOf(db))
		require.NoError(t, err)
		var old []string
		for _, line := range strings.Split(ddl, "\n") {
			if !strings.Contains(line, "deliver_at") {
				old = append(old, line)
			}
		}
		for _, st := range strings.Split(strings.Join(old, "\n"), ";\n") {
			if strings.TrimSpace(st) != "" {
				_, err := db.ExecContext(ctx, st)
				require.NoError(t, err, st)
			}
		}
		hasColumn := func() bool {
			_, err := db.ExecContext(ctx, "SELECT deliver_at FROM "+db.Table("outbox")+" WHERE 1 = 0")
			return err == nil
		}
		require.False(t, hasColumn(), "the old schema")
		// A row written by the previous version.
		_, err = db.ExecContext(ctx, rebind(db, `INSERT INTO `+db.Table("outbox")+` (id, name, msg_key, seq, body, occurred_at, created_at, next_attempt_at)
VALUES (?, 'order.created', 'k', 1, ?, `+oldNow[db.Kind]+`, `+oldNow[db.Kind]+`, `+oldNow[db.Kind]+`)`), "old-row", []byte("{}"))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "INSERT INTO "+db.Table("keys")+" (msg_key, last_seq) VALUES ('k', 1)")
		require.NoError(t, err)

		s := newStore(t, db) // migrates
		require.True(t, hasColumn(), "Migrate added deliver_at")
		require.NoError(t, s.Migrate(ctx), "and finds it the next time")

		rec := newTimedRecorder()
		startRelay(t, s, rec, fastRelay(outbox.WithLogger(brokertest.Logger(t)))...)
		scheduled, next := newMsg("k"), newMsg("k")
		at := time.Now().Add(time.Second)
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			if err := s.Publish(outbox.WithDeliverAt(ctx, at), scheduled); err != nil {
				return err
			}
			return s.Publish(ctx, next)
		}))
		rec.waitPublished(t, "the old row, the new one and the scheduled one", "old-row", next.ID, scheduled.ID)
		assert.Equal(t, "2", rec.message(t, next.ID).Headers[broker.HeaderSeq])
		published, _ := rec.published(scheduled.ID)
		assert.False(t, published.Before(at), "published at %v, before its time %v", published, at)
	})
}

// oldNow is each database's current time as the outbox stores it.
var oldNow = map[string]string{
	"postgres": "now()",
	"mysql":    "UTC_TIMESTAMP(6)",
	"sqlite":   "CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
}

// Keys the outbox reserves, and ids too long for a scheduled message's
// lane, fail the writer's transaction.
func TestScheduledBadArguments(t *testing.T) {
	db := dbtest.OpenSQLite(t)
	s := newStore(t, db)
	ctx := context.Background()
	reserved := newMsg("domainevents:at:x")
	long := newMsg("k")
	long.ID = strings.Repeat("i", 250)
	for _, c := range []struct {
		name string
		ctx  context.Context
		msg  broker.Message
		want string
	}{
		{"reserved key", ctx, reserved, "reserves for scheduled messages"},
		{"reserved key, scheduled", outbox.WithDeliverAt(ctx, time.Now()), reserved, "reserves for scheduled messages"},
		{"long id, scheduled", outbox.WithDeliverAt(ctx, time.Now()), long, "for a scheduled message"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.Transact(c.ctx, func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, c.msg) })
			require.ErrorIs(t, err, broker.ErrInvalid)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	_, ok := outbox.DeliverAtFrom(outbox.WithDeliverAt(ctx, time.Time{}))
	assert.False(t, ok, "the zero time schedules nothing")
	at := time.Now()
	got, ok := outbox.DeliverAtFrom(outbox.WithDeliverAt(ctx, at))
	assert.True(t, ok)
	assert.True(t, got.Equal(at))
}
