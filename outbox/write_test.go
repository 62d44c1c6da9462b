package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

// What the relay could never publish fails the writer's transaction
// instead of committing and dying later: a 20 MiB order event published
// on the bus inside Store.Transact, beside the order's own row, fails the
// transaction with broker.ErrTooLarge, and neither the order row nor any
// outbox row commits.
func TestTooLargeFailsTheTransaction(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		ctx := context.Background()
		orders := db.Table("orders")
		_, err := db.Exec("CREATE TABLE " + orders + " (id VARCHAR(64) NOT NULL PRIMARY KEY)")
		require.NoError(t, err)
		fwd, err := bridge.NewForwarder(s)
		require.NoError(t, err)
		bus := eventbus.New()
		fwd.Attach(bus)

		orderID := uuid.NewString()
		big := events.OrderCreated{OrderID: orderID, UserID: uuid.NewString(), Status: events.StatusCreated, Total: events.Cents(100),
			Items: []events.OrderItem{{ProductID: strings.Repeat("x", 20<<20), Quantity: 1, Price: events.Cents(100)}}}
		err = s.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, rebind(db, "INSERT INTO "+orders+" (id) VALUES (?)"), orderID); err != nil {
				return err
			}
			return eventbus.Publish(ctx, bus, big)
		})
		require.Error(t, err)
		assert.ErrorIs(t, err, broker.ErrTooLarge)
		assert.Contains(t, err.Error(), "WithMaxMessageSize")
		var n int
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+orders).Scan(&n))
		assert.Zero(t, n, "the order row did not commit")
		assert.Zero(t, count(t, db, "1 = 1"), "no outbox row")

		// A small order of the same shape commits.
		big.Items[0].ProductID = "sku-1"
		require.NoError(t, s.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, rebind(db, "INSERT INTO "+orders+" (id) VALUES (?)"), orderID); err != nil {
				return err
			}
			return eventbus.Publish(ctx, bus, big)
		}))
		assert.Equal(t, 1, count(t, db, "1 = 1"))
	})
}

// The limit counts what the hook added, and the fields no broker or schema
// takes beyond 255 bytes are refused as invalid.
func TestWriteLimits(t *testing.T) {
	db := dbtest.OpenSQLite(t)
	s := newStore(t, db, outbox.WithMaxMessageSize(1000), outbox.WithMessageHook(func(_ context.Context, m *broker.Message) {
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers["traceparent"] = strings.Repeat("t", 100)
	}))
	assert.Equal(t, 1000, s.MaxMessageSize())
	publish := func(m broker.Message) error {
		return s.Transact(context.Background(), func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, m) })
	}
	m := newMsg("k")
	m.Body = bytes.Repeat([]byte("b"), 1000-len(m.ID)-len(m.Name)-len(m.Key)-len(m.ContentType))
	for k, v := range m.Headers {
		m.Body = m.Body[:len(m.Body)-len(k)-len(v)]
	}
	err := publish(m)
	require.ErrorIs(t, err, broker.ErrTooLarge, "the hook's header pushes it over")
	assert.Contains(t, err.Error(), "the limit is 1000")
	m.Body = m.Body[:len(m.Body)-len("traceparent")-100]
	require.NoError(t, publish(m), "exactly at the limit")

	long := strings.Repeat("n", 256)
	for name, change := range map[string]func(*broker.Message){
		"Name":        func(m *broker.Message) { m.Name = long },
		"Key":         func(m *broker.Message) { m.Key = long },
		"ID":          func(m *broker.Message) { m.ID = long },
		"ContentType": func(m *broker.Message) { m.ContentType = long },
		"header name": func(m *broker.Message) { m.Headers = map[string]string{long: "v"} },
	} {
		m := newMsg("k")
		change(&m)
		err := publish(m)
		require.ErrorIs(t, err, broker.ErrInvalid, name)
		assert.Contains(t, err.Error(), name, name)
		assert.Contains(t, err.Error(), "at most 255", name)
	}
	m = newMsg(strings.Repeat("k", 255))
	m.Name = strings.Repeat("n", 255)
	require.NoError(t, publish(m), "255 bytes is fine")
}
