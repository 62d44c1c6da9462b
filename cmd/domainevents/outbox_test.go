package main

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// outbox list shows the dead rows and why; outbox redrive --dry-run says
// what it would re-drive and changes nothing; outbox redrive puts the
// selected rows back to pending.
func TestOutboxListAndRedrive(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		ctx := context.Background()
		tables := outbox.Tables{Outbox: db.Table("outbox"), Keys: db.Table("keys"), Inbox: db.Table("inbox")}
		s, err := outbox.New(db.DB, outbox.Dialect(db.Kind), outbox.WithTables(tables))
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx))
		var msgs []broker.Message
		for _, key := range []string{"order-1", "order-1", "order-2"} {
			m := brokertest.NewMessage("order.created")
			m.Key = key
			msgs = append(msgs, m)
		}
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
			for _, m := range msgs {
				if err := s.Publish(ctx, m); err != nil {
					return err
				}
			}
			return nil
		}))
		q := "UPDATE " + tables.Outbox + " SET state = 2, dead_at = created_at, last_error = 'rabbitmq: publish: message too large: 20 MiB'"
		_, err = db.Exec(q)
		require.NoError(t, err)
		flags := []string{"--database-url", db.DSN, "--outbox-table", tables.Outbox}
		state := func(id string) int {
			var st int
			require.NoError(t, db.QueryRow(strings.Replace("SELECT state FROM "+tables.Outbox+" WHERE id = ?", "?",
				map[bool]string{true: "$1", false: "?"}[db.Kind == "postgres"], 1), id).Scan(&st))
			return st
		}

		out, err := cli(t, append([]string{"outbox", "list"}, flags...)...)
		require.NoError(t, err)
		for _, m := range msgs {
			assert.Contains(t, out, m.ID)
		}
		assert.Contains(t, out, "message too large: 20 MiB")
		assert.Contains(t, out, "key=order-1 seq=2")
		assert.Contains(t, out, "3 dead row(s) in "+tables.Outbox)

		out, err = cli(t, append([]string{"outbox", "list", "--key", "order-2", "--body"}, flags...)...)
		require.NoError(t, err)
		assert.Contains(t, out, msgs[2].ID)
		assert.NotContains(t, out, msgs[0].ID)
		assert.Contains(t, out, "body: "+string(msgs[2].Body))

		out, err = cli(t, append([]string{"outbox", "redrive", "--key", "order-1", "--dry-run"}, flags...)...)
		require.NoError(t, err)
		assert.Contains(t, out, "would re-drive 2 row(s)")
		assert.Contains(t, out, "after the events of its key")
		assert.Equal(t, 2, state(msgs[0].ID), "a dry run changes nothing")

		out, err = cli(t, append([]string{"outbox", "redrive", "--key", "order-1"}, flags...)...)
		require.NoError(t, err)
		assert.Contains(t, out, "re-drove 2 row(s)")
		assert.Equal(t, 0, state(msgs[0].ID))
		assert.Equal(t, 0, state(msgs[1].ID))
		assert.Equal(t, 2, state(msgs[2].ID), "not selected")

		out, err = cli(t, append([]string{"outbox", "redrive", "--older-than", "24h"}, flags...)...)
		require.NoError(t, err)
		assert.Contains(t, out, "re-drove 0 row(s)")
		_, err = cli(t, append([]string{"outbox", "redrive", "--older-than", "1ns"}, flags...)...)
		require.NoError(t, err)
		assert.Equal(t, 0, state(msgs[2].ID))

		_, err = cli(t, "outbox", "list", "--database-url", db.DSN, "--outbox-table", "no such table")
		require.ErrorContains(t, err, "--outbox-table")
	})
}
