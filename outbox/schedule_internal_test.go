package outbox

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/dbtest"
)

// When the broker comes back, the relay makes every row backing off due
// at once (dueNow): a scheduled row before its time is not among them.
func TestBrokerBackKeepsSchedule(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s, err := New(db.DB, Dialect(db.Kind), WithTables(Tables{Outbox: db.Table("outbox"), Keys: db.Table("keys"), Inbox: db.Table("inbox")}))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, s.Migrate(ctx))
		msg := func(id string) broker.Message {
			return broker.Message{ID: id, Name: "order.created", Key: "k", Body: []byte("{}")}
		}
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			if err := s.Publish(ctx, msg("backing-off")); err != nil {
				return err
			}
			return s.Publish(WithDeliverAt(ctx, time.Now().Add(time.Hour)), msg("scheduled"))
		}))
		// The first row failed once and backs off for a minute.
		_, err = db.ExecContext(ctx, s.q.rebind(`UPDATE `+s.tables.Outbox+` SET attempts = 1, next_attempt_at = `+s.q.plus("?")+` WHERE id = ?`),
			time.Minute.Microseconds(), "backing-off")
		require.NoError(t, err)

		res, err := db.ExecContext(ctx, s.q.dueNow)
		require.NoError(t, err)
		n, err := res.RowsAffected()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "the row backing off only")
		due := func(id string) bool {
			var c int
			require.NoError(t, db.QueryRowContext(ctx, s.q.rebind(`SELECT count(*) FROM `+s.tables.Outbox+` WHERE id = ? AND next_attempt_at <= `+s.q.now), id).Scan(&c))
			return c == 1
		}
		assert.True(t, due("backing-off"))
		assert.False(t, due("scheduled"), "a scheduled row keeps its time")
	})
}
