package outbox_test

import (
	"context"
	"errors"
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

func ids(rows []outbox.DeadRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Message.ID)
	}
	return out
}

// End to end: rows the broker refused for good are dead, listed with
// their reason, re-driven once the broker takes them, and then published
// by the relay, each key's re-driven rows in sequence order after the
// rows that moved on while they were dead.
func TestRedriveEndToEnd(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		var refuse atomic.Bool
		refuse.Store(true)
		rec := &brokertest.Recorder{Fail: func(m broker.Message) error {
			if refuse.Load() && m.Headers["poison"] == "yes" {
				return &broker.Error{Op: "test", Kind: broker.ErrInvalid, Err: errors.New("Schema 100% WRONG_here")}
			}
			return nil
		}}
		poison := func(key string) broker.Message {
			m := newMsg(key)
			m.Headers = map[string]string{"poison": "yes"}
			return m
		}
		a1, a2, a3 := poison("a"), newMsg("a"), poison("a") // a2 overtakes a1 while a1 is dead
		b1 := poison("b")
		b1.Name = "order.cancelled"
		write(t, s, a1, a2, a3, b1)
		r := startRelay(t, s, rec, fastRelay()...)
		brokertest.WaitFor(t, time.Minute, "three dead rows, a2 published", func() bool {
			return count(t, db, "state = 2") == 3 && len(rec.Messages()) == 1
		})
		require.Equal(t, a2.ID, rec.Messages()[0].ID)

		all, err := s.DeadRows(ctx, outbox.DeadFilter{})
		require.NoError(t, err)
		require.Equal(t, []string{a1.ID, a3.ID, b1.ID}, ids(all), "by key, then sequence")
		d := all[0]
		assert.Equal(t, a1.Name, d.Message.Name)
		assert.Equal(t, "a", d.Message.Key)
		assert.Equal(t, a1.Body, d.Message.Body)
		assert.Equal(t, a1.Headers, d.Message.Headers)
		assert.Equal(t, int64(1), d.Seq)
		assert.Equal(t, 1, d.Attempts)
		assert.Contains(t, d.Reason, "Schema 100% WRONG_here")
		assert.WithinDuration(t, a1.Time, d.Message.Time, time.Millisecond)
		assert.False(t, d.CreatedAt.IsZero())
		assert.False(t, d.DeadAt.Before(d.CreatedAt), "dead after written")

		for _, c := range []struct {
			name string
			f    outbox.DeadFilter
			want []string
		}{
			{"key", outbox.DeadFilter{Key: "b"}, []string{b1.ID}},
			{"id", outbox.DeadFilter{ID: a3.ID}, []string{a3.ID}},
			{"name", outbox.DeadFilter{Name: "order.cancelled"}, []string{b1.ID}},
			{"reason ignores case", outbox.DeadFilter{Reason: "schema 100% wrong_"}, []string{a1.ID, a3.ID, b1.ID}},
			{"reason with wildcards taken literally", outbox.DeadFilter{Reason: "1_0%"}, nil},
			{"reason not found", outbox.DeadFilter{Reason: "too large"}, nil},
			{"older than", outbox.DeadFilter{OlderThan: time.Hour}, nil},
			{"limit", outbox.DeadFilter{Limit: 2}, []string{a1.ID, a3.ID}},
			{"key and limit", outbox.DeadFilter{Key: "a", Limit: 1}, []string{a1.ID}},
		} {
			got, err := s.DeadRows(ctx, c.f)
			require.NoError(t, err, c.name)
			assert.Equal(t, c.want, ids(got), c.name)
		}
		_, err = s.DeadRows(ctx, outbox.DeadFilter{Limit: -1})
		require.ErrorIs(t, err, broker.ErrInvalid)
		assert.Contains(t, err.Error(), "Limit -1")
		_, err = s.Redrive(ctx, outbox.DeadFilter{OlderThan: -time.Second})
		require.ErrorIs(t, err, broker.ErrInvalid)
		assert.Contains(t, err.Error(), "OlderThan")

		none, err := s.Redrive(ctx, outbox.DeadFilter{OlderThan: time.Hour})
		require.NoError(t, err)
		assert.Empty(t, none)
		assert.Equal(t, 3, count(t, db, "state = 2"), "nothing re-driven")

		// The broker takes them now: re-drive key a, then the rest.
		refuse.Store(false)
		got, err := s.Redrive(ctx, outbox.DeadFilter{Key: "a"})
		require.NoError(t, err)
		require.Equal(t, []string{a1.ID, a3.ID}, ids(got))
		assert.Equal(t, 1, got[0].Attempts, "as it was while dead")
		st := stateOf(t, db, a1.ID)
		assert.Equal(t, 0, st.State)
		brokertest.WaitFor(t, time.Minute, "key a re-driven and published", func() bool { return len(rec.Messages()) == 3 })
		got, err = s.Redrive(ctx, outbox.DeadFilter{})
		require.NoError(t, err)
		require.Equal(t, []string{b1.ID}, ids(got))
		brokertest.WaitFor(t, time.Minute, "all published", func() bool { return len(rec.Messages()) == 4 })

		var order []string
		for _, m := range rec.Messages() {
			if m.Key == "a" {
				order = append(order, m.ID)
			}
		}
		assert.Equal(t, []string{a2.ID, a1.ID, a3.ID}, order, "a re-driven key's rows after those that moved on, in sequence order")
		brokertest.WaitFor(t, time.Minute, "marked published", func() bool { return count(t, db, "state = 1") == 4 })
		assert.Equal(t, int64(3), r.Stats().DeadLettered, "dead once each, before the re-drive")
		rest, err := s.DeadRows(ctx, outbox.DeadFilter{})
		require.NoError(t, err)
		assert.Empty(t, rest)
	})
}

// A re-driven row whose key has a row in flight waits for that row's
// lease: one message per key in flight, even across a re-drive.
func TestRedriveWaitsForKeyInFlight(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		dead, next := newMsg("k"), newMsg("k")
		write(t, s, dead, next)
		_, err := db.Exec(rebind(db, "UPDATE "+db.Table("outbox")+" SET state = 2, dead_at = created_at, last_error = 'boom' WHERE id = ?"), dead.ID)
		require.NoError(t, err)
		setLease(t, db, next.ID, "relay-elsewhere", time.Hour) // next is being published

		got, err := s.Redrive(ctx, outbox.DeadFilter{})
		require.NoError(t, err)
		require.Equal(t, []string{dead.ID}, ids(got))
		assert.Equal(t, 1, count(t, db, "id = ? AND state = 0 AND attempts = 0 AND next_attempt_at >= (SELECT lease_until FROM "+
			db.Table("outbox")+" WHERE id = ?) - "+map[string]string{
			"postgres": "interval '1 millisecond'", "mysql": "INTERVAL 1000 MICROSECOND", "sqlite": "1000"}[db.Kind], dead.ID, next.ID),
			"due when the lease of the key's row in flight ends")

		other := newMsg("other")
		write(t, s, other)
		_, err = db.Exec(rebind(db, "UPDATE "+db.Table("outbox")+" SET state = 2, dead_at = created_at WHERE id = ?"), other.ID)
		require.NoError(t, err)
		_, err = s.Redrive(ctx, outbox.DeadFilter{ID: other.ID})
		require.NoError(t, err)
		assert.Equal(t, 1, count(t, db, "id = ? AND state = 0 AND next_attempt_at <= "+map[string]string{
			"postgres": "now()", "mysql": "UTC_TIMESTAMP(6)", "sqlite": "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"}[db.Kind], other.ID),
			"a key with nothing in flight: due at once")
	})
}

// Re-driving more rows than one batch takes each of them once, in the
// order DeadRows lists them, up to the limit.
func TestRedriveManyBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		var msgs []broker.Message
		for i := range 1200 {
			msgs = append(msgs, newMsg(string(rune('a'+i%7))))
		}
		write(t, s, msgs...)
		_, err := db.Exec("UPDATE " + db.Table("outbox") + " SET state = 2, dead_at = created_at, last_error = 'x'")
		require.NoError(t, err)
		rows, err := s.DeadRows(ctx, outbox.DeadFilter{})
		require.NoError(t, err)
		require.Len(t, rows, 1200)
		got, err := s.Redrive(ctx, outbox.DeadFilter{Limit: 1100})
		require.NoError(t, err)
		assert.Len(t, got, 1100)
		assert.Equal(t, ids(rows[:1100]), ids(got), "the rows DeadRows lists, in its order")
		assert.Equal(t, 100, count(t, db, "state = 2"))
	})
}
