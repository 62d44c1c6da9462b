package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// seqd is a delivery of key's event number seq.
func seqd(key string, seq int64) broker.Delivery {
	m := newMsg(key)
	return broker.Delivery{Message: m, Seq: seq, Attempt: 1, Source: "test"}
}

// appliedLog is a handler that records, in the inbox's transaction, the
// order in which each key's events applied (a table of (key, seq, pos)).
type appliedLog struct {
	db    *dbtest.DB
	table string
	pos   atomic.Int64
}

func newAppliedLog(t *testing.T, db *dbtest.DB) *appliedLog {
	l := &appliedLog{db: db, table: db.Table("applied")}
	_, err := db.Exec("CREATE TABLE " + l.table + " (msg_key VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, pos BIGINT NOT NULL)")
	require.NoError(t, err)
	return l
}

func (l *appliedLog) handler(ctx context.Context, d broker.Delivery) error {
	tx, _ := outbox.TxFrom(ctx)
	_, err := tx.ExecContext(ctx, rebind(l.db, "INSERT INTO "+l.table+" (msg_key, seq, pos) VALUES (?, ?, ?)"), d.Key, d.Seq, l.pos.Add(1))
	return err
}

// seqs returns key's applied numbers in the order they committed.
func (l *appliedLog) seqs(t *testing.T, key string) []int64 {
	t.Helper()
	rows, err := l.db.Query(rebind(l.db, "SELECT seq FROM "+l.table+" WHERE msg_key = ? ORDER BY pos"), key)
	require.NoError(t, err)
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var n int64
		require.NoError(t, rows.Scan(&n))
		out = append(out, n)
	}
	require.NoError(t, rows.Err())
	return out
}

func newInbox(t *testing.T, s *outbox.Store, consumer string, opts ...outbox.InboxOption) *outbox.Inbox {
	t.Helper()
	in, err := outbox.NewInbox(s, consumer, append([]outbox.InboxOption{outbox.WithInboxLogger(brokertest.Logger(t))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// TestInboxCommitOrder: a key's events apply in sequence; one ahead of a
// gap is refused (retryable, ErrOutOfOrder) and listed as blocked until
// the missing one applies; one at or below the last applied is skipped.
func TestInboxCommitOrder(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		noLeak(t)
		s := newStore(t, db)
		l := newAppliedLog(t, db)
		in := newInbox(t, s, "billing")
		h := in.Handler(l.handler)
		ctx := context.Background()
		applied := func(key string) int64 {
			n, err := in.Applied(ctx, key)
			require.NoError(t, err)
			return n
		}

		require.NoError(t, h(ctx, seqd("o1", 1)))
		two, three := seqd("o1", 2), seqd("o1", 3)
		err := h(ctx, three)
		require.ErrorIs(t, err, outbox.ErrOutOfOrder, "3 before 2")
		assert.False(t, broker.Permanent(err), "retried, not dead-lettered at once")
		assert.Contains(t, err.Error(), "o1")
		blocked := in.Blocked()
		require.Len(t, blocked, 1)
		assert.Equal(t, outbox.BlockedKey{Key: "o1", Applied: 1, Waiting: 3, EventID: three.ID, Since: blocked[0].Since,
			Last: blocked[0].Last, Refusals: 1}, blocked[0])
		require.ErrorIs(t, h(ctx, three), outbox.ErrOutOfOrder, "its retry, still ahead")
		assert.Equal(t, 2, in.Blocked()[0].Refusals)
		assert.Equal(t, int64(1), applied("o1"))

		require.NoError(t, h(ctx, two))
		assert.Empty(t, in.Blocked(), "the gap filled")
		require.NoError(t, h(ctx, three), "the retry applies now")
		assert.Equal(t, int64(3), applied("o1"))
		assert.Equal(t, []int64{1, 2, 3}, l.seqs(t, "o1"))

		require.NoError(t, h(ctx, three), "a redelivery: skipped by its id")
		assert.Equal(t, []int64{1, 2, 3}, l.seqs(t, "o1"))

		// A key starts at number 1: its number 2 waits for it.
		require.ErrorIs(t, h(ctx, seqd("o2", 2)), outbox.ErrOutOfOrder)
		o2 := seqd("o2", 2)
		require.NoError(t, h(ctx, seqd("o2", 1)))
		require.NoError(t, h(ctx, o2))

		// Number 1 again with a new id: the producer's counter for the key
		// started over (its rows were pruned). The new number 2, should it
		// come first (another consumer process took number 1), waits for
		// it instead of passing for a duplicate.
		again2 := seqd("o2", 2)
		require.ErrorIs(t, h(ctx, again2), outbox.ErrOutOfOrder)
		require.NoError(t, h(ctx, seqd("o2", 1)))
		require.NoError(t, h(ctx, again2))
		assert.Equal(t, []int64{1, 2, 1, 2}, l.seqs(t, "o2"))

		// Without a sequence number (published without the outbox): only
		// deduplicated.
		plain := broker.Delivery{Message: newMsg("o1"), Source: "test"}
		require.NoError(t, h(ctx, plain))
		require.NoError(t, h(ctx, plain))
		assert.Equal(t, []int64{1, 2, 3, 0}, l.seqs(t, "o1"))

		// A failing handler rolls the key's number back with everything.
		fail := in.Handler(func(ctx context.Context, d broker.Delivery) error {
			if err := l.handler(ctx, d); err != nil {
				return err
			}
			return errors.New("handler failed")
		})
		require.Error(t, fail(ctx, seqd("o1", 4)))
		assert.Equal(t, int64(3), applied("o1"))

		// Per consumer.
		other := newInbox(t, s, "shipping")
		require.NoError(t, other.Handler(l.handler)(ctx, seqd("o1", 1)))
		assert.Equal(t, int64(3), applied("o1"))
	})
}

// TestInboxSkip: a gap that never fills (its event dead-lettered) blocks
// the key until the operator skips it; the skipped event, re-driven
// later, is skipped as a duplicate.
func TestInboxSkip(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		l := newAppliedLog(t, db)
		in := newInbox(t, s, "billing")
		h := in.Handler(l.handler)
		ctx := context.Background()
		require.NoError(t, h(ctx, seqd("o1", 1)))
		lost, waiting := seqd("o1", 2), seqd("o1", 3)
		for range 3 {
			require.ErrorIs(t, h(ctx, waiting), outbox.ErrOutOfOrder)
		}
		require.Len(t, in.Blocked(), 1)

		require.NoError(t, in.Skip(ctx, "o1", 2))
		assert.Empty(t, in.Blocked())
		require.NoError(t, h(ctx, waiting), "the event after the skipped one applies")
		require.ErrorIs(t, h(ctx, lost), outbox.ErrOutOfOrder, "the skipped event, re-driven: never applied out of order")
		assert.Equal(t, []int64{1, 3}, l.seqs(t, "o1"))
		require.NoError(t, in.Skip(ctx, "o1", 1), "never moves the key back")
		n, err := in.Applied(ctx, "o1")
		require.NoError(t, err)
		assert.Equal(t, int64(3), n)

		require.NoError(t, in.Skip(ctx, "fresh", 5), "a key never seen")
		require.ErrorIs(t, h(ctx, seqd("fresh", 7)), outbox.ErrOutOfOrder)
		require.NoError(t, h(ctx, seqd("fresh", 6)))

		assert.ErrorIs(t, in.Skip(ctx, "", 1), broker.ErrInvalid)
		assert.ErrorIs(t, in.Skip(ctx, "o1", 0), broker.ErrInvalid)
	})
}

// TestInboxOrderConcurrent: each key's events delivered out of order by
// several goroutines at once (as two consumer processes would), each
// refused delivery tried again: the table gets every event once, each key
// in sequence.
func TestInboxOrderConcurrent(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		l := newAppliedLog(t, db)
		in := newInbox(t, s, "billing")
		h := in.Handler(l.handler)
		keys, per, workers := 6, 15, 6
		if db.Kind == "sqlite" {
			keys, per, workers = 4, 10, 3
		}
		var all []broker.Delivery
		for k := range keys {
			for n := 1; n <= per; n++ {
				all = append(all, seqd(fmt.Sprintf("k%d", k), int64(n)))
			}
		}
		rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		work := make(chan broker.Delivery, len(all))
		for _, d := range all {
			work <- d
		}
		var left atomic.Int64
		left.Store(int64(len(all)))
		var wg sync.WaitGroup
		var refused atomic.Int64
		for range workers {
			wg.Go(func() {
				for left.Load() > 0 {
					var d broker.Delivery
					select {
					case d = <-work:
					default:
						time.Sleep(time.Millisecond)
						continue
					}
					err := h(context.Background(), d)
					switch {
					case err == nil:
						left.Add(-1)
					case errors.Is(err, outbox.ErrOutOfOrder):
						refused.Add(1)
						work <- d // later
					case retryable(err):
						work <- d // a deadlock victim
					default:
						t.Errorf("handler: %v", err)
						left.Add(-1)
					}
				}
			})
		}
		wg.Wait()
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			want := make([]int64, per)
			for i := range want {
				want[i] = int64(i + 1)
			}
			assert.Equal(t, want, l.seqs(t, key), "key %s in commit order, each once", key)
		}
		t.Logf("%s: %d events of %d keys, shuffled over %d workers: %d refused as ahead of a gap, then applied in order",
			db.Kind, len(all), keys, workers, refused.Load())
		assert.Empty(t, in.Blocked())
	})
}

// TestInboxKeyCleanup: a key without an event for longer than the window
// is forgotten: it starts again at number 1 (the producer's counter has
// by then), or anywhere with WithFirstSeenStarts.
func TestInboxKeyCleanup(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		l := newAppliedLog(t, db)
		in := newInbox(t, s, "billing", outbox.WithInboxWindow(time.Millisecond, time.Hour))
		h := in.Handler(l.handler)
		ctx := context.Background()
		require.NoError(t, h(ctx, seqd("o1", 1)))
		require.NoError(t, h(ctx, seqd("o1", 2)))
		brokertest.WaitFor(t, time.Minute, "the id and key rows cleaned up", func() bool {
			n, err := in.Cleanup(ctx)
			require.NoError(t, err)
			last, err := in.Applied(ctx, "o1")
			require.NoError(t, err)
			return n > 0 && last == 0
		})
		require.ErrorIs(t, h(ctx, seqd("o1", 9)), outbox.ErrOutOfOrder)
		require.NoError(t, h(ctx, seqd("o1", 1)))
		assert.Equal(t, []int64{1, 2, 1}, l.seqs(t, "o1"))

		joiner := newInbox(t, s, "joiner", outbox.WithFirstSeenStarts())
		jh := joiner.Handler(l.handler)
		require.NoError(t, jh(ctx, seqd("o9", 7)), "a consumer that joined later starts where it joins")
		require.NoError(t, jh(ctx, seqd("o9", 8)))
		require.ErrorIs(t, jh(ctx, seqd("o9", 10)), outbox.ErrOutOfOrder)
		assert.Equal(t, []int64{7, 8}, l.seqs(t, "o9"))
	})
}

func TestTablesInboxKeys(t *testing.T) {
	ddl, err := outbox.DDL(outbox.Postgres, outbox.Tables{Inbox: "app.received"})
	require.NoError(t, err)
	assert.Contains(t, ddl, "CREATE TABLE IF NOT EXISTS app.received_keys (", "derived from the inbox's name")
	ddl, err = outbox.DDL(outbox.MySQL, outbox.Tables{InboxKeys: "seen_keys"})
	require.NoError(t, err)
	assert.Contains(t, ddl, "CREATE TABLE IF NOT EXISTS seen_keys (")
	_, err = outbox.DDL(outbox.SQLite, outbox.Tables{InboxKeys: "domainevents_inbox"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "must differ")
	_, err = outbox.DDL(outbox.SQLite, outbox.Tables{InboxKeys: "bad name"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Tables.InboxKeys")
}
